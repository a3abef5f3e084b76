"""The whole Guess-or-Recall study as one run: verdicts → labels → features → CNNs → maps → effects.

Steps (each saved in the run directory, see :func:`run`):

1. memorization verdicts from the engine (``workbench.memorization.sweep``; the clean model and
   every block short-circuited alone), or read from an existing memorization run;
2. labels in both taxonomies (:mod:`workbench.taxonomy.labels`), next to the organism's ground
   truth when there is one;
3. head-pooled attention features, streamed to ``features/attention_<pooling>.npy`` one batch
   (a unit of ``workbench.runner``, resumable, ``--executor ray``) at a time;
4. per taxonomy: every CNN variant × seed (min-F1, per-class F1, confusion matrices), then the
   localization maps of all those CNNs (``localization_<taxonomy>.npy`` + a per-layer summary);
5. the per-class short-circuit table (``class_drop``) and HTML figures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import cli
from workbench.commands import TaxonomyConfig
from workbench.errors import UserError
from workbench.export import save
from workbench.taxonomy import baselines, cnn, labels, localize, report, split_effects, splits
from workbench.taxonomy.features import head_patterns, stream_features

log = logging.getLogger(__name__)


def _resolve_inputs(cfg: TaxonomyConfig) -> tuple[str, str | None]:
    from workbench.organism import registry

    if cfg.data is not None:
        return cfg.data, cfg.ground_truth
    return str(registry.TAXONOMY_SET), str(cfg.ground_truth or registry.TAXONOMY_GROUND_TRUTH)


def _read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.is_dir():
        path = path / "memorization.parquet"
    return pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)


def reused_verdicts(path: str | Path, record: dict, n_samples: int) -> pd.DataFrame:
    """A memorization table of another run, refused unless it is of this model and data: the
    weights' and the data's content hashes when that run recorded them, else the table's
    ``model`` and ``dataset`` columns."""
    table = _read_table(path)
    meta = Path(path) / "config.json"
    theirs = json.loads(meta.read_text())["config"] if meta.is_file() else {}
    ours, where = record["identity"], f"--memorization {path}"
    if "identity" in theirs:
        changed = [
            k for k in ("weights_sha256", "data_sha256") if theirs["identity"].get(k) != ours[k]
        ]
        if changed:
            what = " and ".join(
                {"weights_sha256": "model", "data_sha256": "data"}[k] for k in changed
            )
            raise UserError(f"{where} is a run of another {what} (its {', '.join(changed)} differ)")
    elif "model" not in table.columns:
        raise UserError(f"{where} has no config.json and no model column: whose verdicts?")
    else:
        models = sorted(set(table["model"].astype(str)))
        if models != [record["model"]]:
            raise UserError(f"{where} holds verdicts of {models}, not of {record['model']}")
    if len(table) and int(table["sample"].max()) >= n_samples:
        raise UserError(
            f"{where} has sample {int(table['sample'].max())}; the data has {n_samples}"
        )
    log.info("reusing memorization verdicts from %s (%d rows)", path, len(table))
    return table


def memorization_verdicts(cfg: TaxonomyConfig, model, tokens: np.ndarray, run) -> pd.DataFrame:
    """The engine's table: reused from ``cfg.memorization`` or swept into this run."""
    if cfg.memorization is not None:
        return reused_verdicts(cfg.memorization, run.config, len(tokens))
    from workbench.interventions import interventions_from
    from workbench.memorization import sweep
    from workbench.runner import Loader

    interventions = interventions_from(cfg.blocks, model.cfg.n_layers, kind=cfg.kind)
    return sweep(
        model,
        tokens,
        interventions,
        prefix_len=cfg.prefix_len,
        batch_size=max(cfg.batch_size, 64),
        decode=cfg.decode,
        progress=bool(cfg.progress),
        run=run,
        model_name=run.config["model"],
        executor=cfg.executor,
        ray_address=cfg.ray_address,
        load=Loader(cfg.device, cfg.dtype),
    )


def sample_labels(
    cfg: TaxonomyConfig,
    tokens: np.ndarray,
    memorized: np.ndarray,
    truth: pd.DataFrame | None,
    tokenizer,
) -> pd.DataFrame:
    """Both taxonomies per sample, with the ground truth's columns (``gt_*``) when known."""
    dup = None
    if truth is not None and cfg.duplicates_column in truth.columns:
        dup = truth[cfg.duplicates_column].to_numpy(dtype=float)
    config = labels.LabelConfig(prefix_len=cfg.prefix_len)
    table = labels.label_samples(tokens, memorized, dup, config, tokenizer=tokenizer)
    if truth is not None:
        for col in truth.columns:
            if col not in ("prefix_text", "suffix_text"):
                table[f"gt_{col}"] = truth[col].to_numpy()
    return table


def _features(cfg, model, tokens, run, poolings) -> dict[str, np.ndarray]:
    """The attention features in the run, one unit per batch (resumable, any executor)."""
    from workbench.runner import Loader

    return stream_features(
        model,
        tokens,
        run,
        poolings=poolings,
        batch_size=cfg.batch_size,
        model_name=run.config["model"],
        executor=cfg.executor,
        ray_address=cfg.ray_address,
        load=Loader(cfg.device, cfg.dtype),
        progress=bool(cfg.progress),
    )


def _class_labels(table: pd.DataFrame, taxonomy: str, min_size: int) -> tuple[np.ndarray, list]:
    """Class indices with classes smaller than ``min_size`` excluded (-1), and kept classes."""
    idx = labels.class_indices(table[taxonomy].tolist(), taxonomy)
    names = labels.TAXONOMIES[taxonomy]
    counts = np.bincount(idx[idx >= 0], minlength=len(names))
    kept = [c for c in range(len(names)) if counts[c] >= min_size]
    dropped = [names[c] for c in range(len(names)) if c not in kept]
    if dropped:
        log.warning(
            "%s: classes %s have < %d samples and are left out", taxonomy, dropped, min_size
        )
    remap = {c: i for i, c in enumerate(kept)}
    return np.array([remap.get(int(i), -1) for i in idx]), [names[c] for c in kept]


def run(cfg: TaxonomyConfig) -> dict:
    """Run the study; returns the tables (and the run path) also saved in the run directory."""
    from workbench.memorization import load_inputs
    from workbench.organism import registry
    from workbench.runs import Run, check_out, default_out, identity

    data, gt_path = _resolve_inputs(cfg)
    model_name = str(cfg.model or registry.DEFAULT_MODEL)
    record = {
        **cli.recorded(cfg),
        "model": model_name,
        "data": data,
        "ground_truth": gt_path,
        "identity": identity(model_name, data),
    }
    out = cfg.out or default_out("taxonomy", model_name, record)
    check_out(out, record, overwrite=cfg.overwrite)
    model, model_name, samples = load_inputs(
        cfg.model, data, prefix_len=cfg.prefix_len, device=cfg.device, dtype=cfg.dtype
    )
    tokens = samples.tokens
    truth = None if gt_path is None else _read_table(gt_path)
    if truth is not None and len(truth) != len(tokens):
        raise UserError(f"ground truth {gt_path} has {len(truth)} rows for {len(tokens)} samples")
    run_ = Run.open(out, record, overwrite=cfg.overwrite)

    mem = memorization_verdicts(cfg, model, tokens, run_)
    table = sample_labels(
        cfg, tokens, split_effects.clean_verdicts(mem, len(tokens)), truth, model.tokenizer
    )
    run_.save("labels", "all", table)
    results: dict = {"path": run_.path, "labels": run_.finish("labels")}

    variants = cfg.variant_list()
    poolings = sorted({v.pooling for v in variants})
    feats = _features(cfg, model, tokens, run_, poolings)
    taxonomies = [t for t in cfg.taxonomies if t in table.columns]
    groups = splits.sample_groups(tokens, truth, cfg.prefix_len) if truth is not None else None
    clean = mem[mem["intervention"] == split_effects.CLEAN_LABEL].drop_duplicates("sample")
    nll = None  # the suffix-NLL baseline needs the engine's suffix_nll column
    if "suffix_nll" in clean:
        nll = clean.set_index("sample")["suffix_nll"].reindex(range(len(tokens))).to_numpy()
    else:
        log.warning("the verdicts have no suffix_nll: the suffix-NLL baseline is left out")
    evidence = ((table["template"] != "none") | (table["rouge_l"] >= 0.5)
                | (table["rouge_3"] >= 0.5)).to_numpy()  # fmt: skip
    mass = baselines.attention_mass(feats[poolings[0]], cfg.prefix_len)
    for taxonomy in taxonomies:
        y, classes = _class_labels(table, taxonomy, cfg.min_class_size)
        if len(classes) < 2:
            log.warning("%s: fewer than two classes to tell apart; skipped", taxonomy)
            continue
        parts = splits.grouped_splits(y, groups, cfg.splits, cfg.test_fraction)
        run_.save("splits", taxonomy, _split_table(taxonomy, tokens, y, classes, parts))
        scores, confusion, trained = cnn.evaluate(
            feats,
            y,
            classes,
            variants=variants,
            seeds=range(cfg.seeds),
            config=cfg.train_config(),
            splits=parts,
            baselines=baselines.baselines(nll, evidence, mass, len(classes)),
        )
        for name, df in (("scores", scores), ("confusion", confusion)):
            df.insert(0, "taxonomy", taxonomy)
            run_.save(name, taxonomy, df)
        if cfg.localize:
            maps, _, per_model = localize.localization_maps(
                trained,
                feats,
                y,
                len(classes),
                lambda idx: head_patterns(model, _tensor(tokens[idx])),
                return_per_model=True,
            )
            np.save(run_.path / f"localization_{taxonomy}.npy", maps)
            summary = localize.layer_summary(maps, classes, cfg.prefix_len)
            summary.insert(0, "taxonomy", taxonomy)
            run_.save("localization", taxonomy, summary)
            peaks = localize.layer_peaks(per_model, classes)
            peaks.insert(0, "taxonomy", taxonomy)
            run_.save("peaks", taxonomy, peaks)
            title = f"Localization maps ({taxonomy}), {model_name}"
            fig = report.localization_figure(maps, classes, title, cfg.prefix_len)
            save(fig, run_.path, f"localization_{taxonomy}", formats=("html",))
    for name in ("splits", "scores", "confusion", "localization", "peaks"):
        results[name] = run_.finish(name)
    if not results["scores"].empty:
        results["min_f1"] = min_f1_summary(results["scores"])
        run_.save("min_f1", "all", results["min_f1"])
        run_.finish("min_f1")
        save(report.min_f1_figure(results["min_f1"]), run_.path, "min_f1", formats=("html",))
    if not results["localization"].empty:
        fig = report.layer_share_figure(results["localization"])
        save(fig, run_.path, "localization_layers", formats=("html",))
    drops = split_effects.class_drop(mem, table, taxonomies)
    run_.save("class_drop", "all", drops)
    results["class_drop"] = run_.finish("class_drop")
    save(split_effects.drop_figure(drops), run_.path, "class_drop", formats=("html",))
    return results


def _split_table(taxonomy, tokens, y, classes, parts) -> pd.DataFrame:
    """Per split and class: training and test sizes, and the fraction of test windows that share
    a 32-token run with a training window (near-duplicates the groups do not catch)."""
    rows = []
    for i, (train, test) in enumerate(parts):
        shared = splits.overlap_with_training(tokens, train, test)
        for c, name in enumerate(classes):
            rows.append({
                "taxonomy": taxonomy, "split": i, "class": name,
                "n_train": int((y[train] == c).sum()), "n_test": int((y[test] == c).sum()),
                "test_sharing_32_tokens_with_train": float(shared[y[test] == c].mean()),
            })  # fmt: skip
    return pd.DataFrame(rows)


def min_f1_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per taxonomy and method (CNN variants and baselines): min-F1, accuracy and per-class F1
    with 95% intervals over the splits, best first."""
    frames = []
    for taxonomy, g in scores.groupby("taxonomy", sort=False):
        s = cnn.summarize(g)
        s.insert(0, "taxonomy", taxonomy)
        frames.append(s)
    return pd.concat(frames, ignore_index=True)


def _tensor(x: np.ndarray):
    import torch

    return torch.as_tensor(x, dtype=torch.long)
