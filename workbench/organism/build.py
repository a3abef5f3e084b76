"""Everything the organism ships besides its weights, from the corpus and the trained main member.

    python -m workbench.organism.train --all   # the members (resumable; docs/organism.md)
    python -m workbench.organism.build         # then: manifest, windows, sets, tasks, gates

1. ``corpus/manifest.json``: every source (package, version, sha256, bytes, tokens), the
   reasoning lines and the planted canaries, with totals;
2. ``samples/windows.parquet``: every distinct 64-token window of the stream starting every 16
   tokens (``samples.py``), scored by the clean main member (exact match, teacher-forced token
   accuracy);
3. ``samples/memorized.{npy,csv}``, ``samples/control.{npy,csv}`` (from the windows every 32
   tokens) and ``samples/taxonomy.{npy,csv}`` (the taxonomy's balanced set, from the census);
4. ``tasks/``: the local lm-evaluation-harness tasks (``tasks.py``);
5. ``<member>/gates.json`` for every member present (``evaluate.measure_gates``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.organism import evaluate, members, registry, samples, sources, tasks
from workbench.organism.corpus import KINDS, Corpus, CorpusConfig, build_corpus

log = logging.getLogger(__name__)


def manifest(corpus: Corpus) -> dict:
    """Sources with version, sha256, bytes and tokens in the stream; totals by kind."""
    locks = {f"{e['name']}=={e['version']}": e for e in sources.locked_wheels()}
    per_source: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for doc in corpus.documents:
        entry = per_source[doc["source"]]
        entry["documents"] += 1
        entry[f"tokens_{doc['kind']}"] += doc["tokens"]
        entry["tokens"] += doc["tokens"]
    rows = []
    for source, entry in sorted(per_source.items()):
        lock = locks.get(source, {})
        rows.append({"source": source, "sha256": lock.get("sha256", ""), **entry})
    kinds = np.bincount(corpus.kinds.ravel(), minlength=256)
    by_kind = {k: int(kinds[i]) for i, k in enumerate(KINDS)}
    by_kind["separator"] = int(kinds[255])
    planted = by_kind["canary_random"] + by_kind["canary_text"]
    return {
        "corpus_digest": corpus.config.digest(),
        "tokens": corpus.n_tokens,
        "rows": list(corpus.rows.shape),
        "vocab_size": len(corpus.tokenizer),
        "tokens_by_kind": by_kind,
        "planted_fraction": round(planted / corpus.n_tokens, 5),
        "canaries": [{k: c[k] for k in ("canary_id", "kind", "copies")} for c in corpus.canaries],
        "heldout_documents": {k: len(v) for k, v in corpus.heldout.items()},
        "sources": rows,
    }


def _cached(name: str, compute) -> tuple[pd.DataFrame, np.ndarray]:
    stem = sources.cache_root() / "organism-build" / name
    if stem.with_suffix(".npy").is_file() and stem.with_suffix(".parquet").is_file():
        return pd.read_parquet(stem.with_suffix(".parquet")), np.load(stem.with_suffix(".npy"))
    table, tokens = compute()
    stem.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(stem.with_suffix(".parquet"), index=False)
    np.save(stem.with_suffix(".npy"), tokens)
    return table, tokens


def cached_window_table(corpus: Corpus) -> tuple[pd.DataFrame, np.ndarray]:
    """``samples.window_table`` (minutes: ROUGE on every window), cached by the corpus digest:
    the windows every ``samples.STRIDE`` tokens (``aligned``: the sample sets are drawn from
    these), then those every ``samples.CENSUS_STRIDE`` tokens not among them (the taxonomy's
    census)."""
    digest = corpus.config.digest()
    table, tokens = _cached(
        f"{digest}-stride{samples.STRIDE}", lambda: samples.window_table(corpus)
    )
    extra, extra_tokens = _cached(
        f"{digest}-stride{samples.CENSUS_STRIDE}-new",
        lambda: samples.window_table(corpus, stride=samples.CENSUS_STRIDE, exclude=tokens),
    )
    both = pd.concat([table.assign(aligned=True), extra.assign(aligned=False)], ignore_index=True)
    return both, np.concatenate([tokens, extra_tokens])


VERDICTS = ("exact_match", "tf_token_accuracy")


def score_windows(
    member_dir: Path, tokens: np.ndarray, table: pd.DataFrame, scored: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The clean member's verdicts on every window; those of ``scored`` (an earlier
    ``windows.parquet`` of the same corpus) are kept for the windows starting at the same
    stream position, and only the others are computed."""
    table = table.assign(**{v: np.nan for v in VERDICTS})
    if scored is not None:
        keep = scored.set_index("start")[list(VERDICTS)]
        hit = table.start.isin(keep.index).to_numpy()
        old = keep.loc[table.start[hit]]
        for v in VERDICTS:
            table.loc[hit, v] = old[v].to_numpy()
    todo = table.exact_match.isna().to_numpy()
    log.info("scoring %d of %d windows", todo.sum(), len(table))
    if todo.any():
        model, _ = evaluate.load_hf(member_dir)
        fresh = evaluate.verdicts(model, tokens[todo], batch_size=256)
        for v in VERDICTS:
            table.loc[todo, v] = np.asarray(fresh[v])
    return table


def build(
    out: Path,
    corpus: Corpus,
    main: str = members.MAIN_MEMBER,
    reuse_scores: bool = False,
    gates: bool = True,
) -> dict:
    """Write every export; ``reuse_scores`` keeps the main member's verdicts of an existing
    ``windows.parquet`` (the ground truth is recomputed around them; new windows are scored)."""
    t0 = time.perf_counter()
    samples_dir = out / "samples"
    old = samples_dir / "windows.parquet"
    scored = None
    if reuse_scores and old.is_file():
        prior = json.loads((out / "corpus" / "manifest.json").read_text())["corpus_digest"]
        if prior != corpus.config.digest():
            raise ValueError(f"{old} scores corpus {prior}, not {corpus.config.digest()}")
        scored = pd.read_parquet(old)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    info = manifest(corpus)
    (out / "corpus" / "manifest.json").write_text(json.dumps(info, indent=1))
    table, tokens = cached_window_table(corpus)
    log.info("window table: %d windows, %.0f s", len(table), time.perf_counter() - t0)
    table = score_windows(out / main, tokens, table, scored)
    samples_dir.mkdir(parents=True, exist_ok=True)
    table.to_parquet(samples_dir / "windows.parquet", index=False)
    aligned = table.aligned.to_numpy()
    chosen = samples.select(table[aligned].drop(columns="aligned"), tokens[aligned])
    chosen["taxonomy"] = samples.taxonomy_set(table, tokens)
    for name, (arr, sub) in chosen.items():
        np.save(samples_dir / f"{name}.npy", arr)
        sub.to_csv(samples_dir / f"{name}.csv", index=False)
    tasks.export_tasks(corpus, out / "tasks")
    measured = {}
    for name in members.SUITE if gates else ():
        if (out / name / "config.json").is_file():
            measured[name] = evaluate.measure_gates(out / name, samples_dir, out / "tasks")
    log.info("built in %.0f s", time.perf_counter() - t0)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=registry.DATA_DIR, help="suite directory")
    parser.add_argument(
        "--reuse-scores", action="store_true", help="keep the verdicts of windows.parquet"
    )
    parser.add_argument("--no-gates", action="store_true", help="do not re-measure gates.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    corpus = build_corpus(CorpusConfig())
    gates = build(args.out, corpus, reuse_scores=args.reuse_scores, gates=not args.no_gates)
    print(json.dumps({m: g["sets"]["memorized"]["all"] for m, g in gates.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
