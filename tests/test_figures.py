"""Each figure function on small hand-made run tables (traces, axes, labels, values), ``save``,
and ``python -m workbench.figures`` end to end on run directories written here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.figures import (
    MissingColumns,
    bounds_figure,
    duplication_heatmap,
    memorization_by_block,
    model_scale_figure,
    relative_drop_figure,
    save,
    short_circuit_figure,
)
from workbench.figures.cli import main as figures_main
from workbench.runs import Run
from workbench.tables import (
    accuracy_and_drop,
    benchmark_accuracy,
    block_index,
    memorization_means,
    primary_rows,
)

MODELS = {"org-s": 4, "org-m": 6}  # model -> blocks
N_SAMPLES = 8
DUPS = [0, 0, 1, 1, 8, 8, 64, 64]  # per sample; 0 = held-out control


def _labels(n_blocks: int) -> list[tuple[str, str, str, int]]:
    """(intervention, kind, blocks, block index or -1)."""
    out = [("none", "none", "", -1)]
    out += [(f"identity:{b}", "identity", str(b), b) for b in range(n_blocks)]
    return out


def _em(model: str, block: int, sample: int) -> bool:
    """Exact match: clean memorizes dup ≥ 8; short-circuiting block b keeps only dup 64 when b is
    the last block of org-m. Deterministic, so tests can recompute means."""
    if block == -1:
        return DUPS[sample] >= 8
    return DUPS[sample] == 64 and block == MODELS[model] - 1


@pytest.fixture
def mem() -> pd.DataFrame:
    rows = []
    for model, n in MODELS.items():
        labels = [*_labels(n), ("identity:0,1", "identity", "0,1", 99), ("zero:1", "zero", "1", 99)]
        for label, kind, blocks, b in labels:
            for s in range(N_SAMPLES):
                em = _em(model, b, s)
                rows.append(
                    {
                        "model": model,
                        "dataset": "toy",
                        "intervention": label,
                        "kind": kind,
                        "blocks": blocks,
                        "sample": s,
                        "exact_match": em,
                        "token_accuracy": 1.0 if em else 0.25,
                        "completion_entropy": 0.1 if em else 2.0 + max(b, 0),
                        "longest_match": 32 if em else 3,
                        "suffix_nll": 1.0,
                        "generated": None,
                    }
                )
    return pd.DataFrame(rows)


def _acc(model: str, task: str, block: int) -> float:
    clean = {"lang1": 0.8, "lang2": 0.6, "reas": 0.5}[task]
    if block == -1:
        return clean
    drop = 0.5 if task.startswith("lang") else 0.2  # relative drop at block 0, shrinking
    return clean * (1 - drop / (1 + block))


@pytest.fixture
def bench() -> pd.DataFrame:
    rows = []
    for model, n in MODELS.items():
        for label, kind, blocks, b in [*_labels(n), ("identity:0,1", "identity", "0,1", 99)]:
            for task in ("lang1", "lang2", "reas"):
                group = "language" if task.startswith("lang") else "reasoning"
                base = {
                    "model": model,
                    "task": task,
                    "group": group,
                    "intervention": label,
                    "kind": kind,
                    "blocks": blocks,
                    "filter": "none",
                    "stderr": 0.01,
                }
                acc = _acc(model, task, b) if b != 99 else 0.0
                rows.append({**base, "metric": "acc", "value": acc})
                rows.append({**base, "metric": "acc_norm", "value": 0.0})  # not the primary one
    return pd.DataFrame(rows)


@pytest.fixture
def bounds() -> pd.DataFrame:
    rows = []
    n = MODELS["org-m"]
    for block in range(n):
        for layer in range(block + 1, n + 1):
            for s in range(3):
                measured = 0.0 if (block == 2 and layer == 3) else 2.0 ** (layer - block) + s
                rows.append(
                    {
                        "model": "org-m",
                        "block": block,
                        "layer": layer,
                        "sample": s,
                        "measured": measured,
                        "certified": 10 * (measured + 1),
                        "weight": 1e6,
                    }
                )
    return pd.DataFrame(rows)


@pytest.fixture
def truth() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": range(N_SAMPLES),
            "kind": ["control_canary"] * 2 + ["canary"] * 6,
            "split": ["heldout"] * 2 + ["train"] * 6,
            "dup_count": DUPS,
        }
    )


def test_block_index_keeps_clean_and_single_blocks_of_the_kind(mem):
    idx = block_index(mem)
    assert set(idx[mem.intervention == "none"]) == {-1}
    assert idx[mem.intervention.isin(["identity:0,1", "zero:1"])].isna().all()
    assert set(idx.dropna()) == set(range(-1, 6))


def test_tables_means_and_accuracy(mem, bench):
    m = memorization_means(mem)
    clean = m[(m.model == "org-m") & (m.block == -1)].iloc[0]
    assert clean.exact_match == pytest.approx(4 / 8) and clean.n == N_SAMPLES
    b = benchmark_accuracy(bench, by=("group",))
    row = b[(b.model == "org-s") & (b.block == 0) & (b.group == "language")].iloc[0]
    assert row.relative_drop == pytest.approx(0.5) and row.tasks == 2
    assert row.accuracy == pytest.approx((0.8 + 0.6) / 2 * 0.5)


def test_primary_rows_and_accuracy_and_drop_per_model_and_task():
    rows = []
    for model, clean in (("a", 0.8), ("b", 0.4)):  # same task name, different models
        for label, acc in (("none", clean), ("identity:1", clean / 2)):
            base = {"model": model, "task": "t", "intervention": label}
            rows.append({**base, "metric": "acc", "filter": "strict", "value": 0.0})
            rows.append({**base, "metric": "acc", "filter": "none", "value": acc})
            rows.append({**base, "metric": "acc_norm", "filter": "none", "value": 0.0})
            rows.append({**base, "task": "ppl", "metric": "perplexity", "value": 9.0})
    prim = primary_rows(pd.DataFrame(rows))
    assert set(prim.metric) == {"acc"} and set(prim["filter"]) == {"none"} and len(prim) == 4
    out = accuracy_and_drop(prim, ["model", "intervention"]).set_index(["model", "intervention"])
    assert out.loc[("b", "identity:1"), "accuracy"] == pytest.approx(0.2)
    assert out.loc[("a", "identity:1"), "relative_drop"] == pytest.approx(0.5)
    assert out.loc[("b", "none"), "relative_drop"] == 0 and set(out.tasks) == {1}
    none = pd.DataFrame(rows).query("task == 'ppl'")
    assert primary_rows(none, empty_ok=True).empty
    with pytest.raises(MissingColumns, match="reports any of"):
        primary_rows(none)


def test_short_circuit_figure(mem, bench):
    fig = short_circuit_figure(mem, bench, model="org-m")
    assert len(fig.data) == 6  # (blocks, unmodified) × 3 metrics
    blocks = [t for t in fig.data if t.name == "short-circuited block"]
    clean = [t for t in fig.data if t.name == "unmodified model"]
    assert len(blocks) == 3 and len(clean) == 3
    assert list(blocks[0].marker.color) == list(range(6))  # one point per block, coloured by it
    assert blocks[0].marker.coloraxis == "coloraxis" and fig.layout.coloraxis.cmax == 5
    assert clean[0].marker.color == "red"
    assert clean[0].x[0] == pytest.approx((0.8 + 0.6 + 0.5) / 3)
    assert clean[0].y[0] == pytest.approx(0.5)  # clean exact match
    assert blocks[0].y[-1] == pytest.approx(2 / 8)  # last block keeps the two 64× samples
    ytitles = [fig.layout[f"yaxis{i}"].title.text for i in ("", 2, 3)]
    assert ytitles == ["Exact match", "Token accuracy", "Completion entropy (nats)"]
    assert all(fig.layout[f"xaxis{i}"].title.text == "Accuracy" for i in ("", 2, 3))
    assert "org-m" in fig.layout.title.text
    assert len(fig.layout.shapes) == 6  # dotted guides through the unmodified model


def test_model_scale_figure(mem, bench):
    fig = model_scale_figure(mem, bench, models=["org-m", "org-s", "absent"])
    assert [a.text for a in fig.layout.annotations] == ["org-m", "org-s"]
    assert len(fig.data) == 4
    assert len(fig.data[0].x) == 6 and len(fig.data[2].x) == 4  # blocks per model, in order
    assert fig.layout.yaxis.title.text == "Exact match"
    assert fig.layout.coloraxis.cmax == 5
    with pytest.raises(MissingColumns):
        model_scale_figure(mem, bench, models=["absent"])


def test_model_scale_figure_shows_each_model_on_what_it_reproduces(mem, bench):
    from workbench.tables import reproduced_by_clean

    own = reproduced_by_clean(mem)
    for model, rows in mem.groupby("model"):
        clean = rows[rows.intervention == "none"]
        kept = set(clean["sample"][clean.exact_match.astype(bool)])
        assert set(own[own.model == model]["sample"]) == kept and kept < set(rows["sample"])
    every = model_scale_figure(mem, bench, models=["org-m"], own=False)
    mine = model_scale_figure(mem, bench, models=["org-m"])
    clean_y = {f.data[1].y[0] for f in (every, mine)}
    assert clean_y == {0.5, 1.0}


def test_relative_drop_figure(bench):
    fig = relative_drop_figure(bench, model="org-s")
    assert [t.name for t in fig.data] == ["Language tasks", "Reasoning tasks"]
    lang, reas = fig.data
    assert list(lang.x) == [0, 1, 2, 3]
    np.testing.assert_allclose(lang.y, [0.5 / (1 + b) for b in range(4)])
    np.testing.assert_allclose(reas.y, [0.2 / (1 + b) for b in range(4)])
    assert fig.layout.xaxis.title.text == "Short-circuited attention block"
    assert fig.layout.yaxis.title.text == "Relative decrease in accuracy"


def test_bounds_figure(bounds):
    fig = bounds_figure(bounds, show_weight=False)
    assert fig.layout.yaxis.type == "log"
    assert len(fig.data) == 2 * 6
    measured = {t.name: t for t in fig.data if t.name.endswith("measured")}
    certified = {t.name: t for t in fig.data if t.name.endswith("certified")}
    assert all(t.line.dash == "solid" for t in measured.values())
    assert all(t.line.dash == "dash" for t in certified.values())
    b0 = measured["block 0 measured"]
    assert list(b0.x) == list(range(1, 7))
    np.testing.assert_allclose(b0.y, [2.0**layer + 1 for layer in range(1, 7)])  # median of +0,1,2
    assert 3 not in list(measured["block 2 measured"].x)  # zero is not drawn on a log axis
    assert b0.line.color == certified["block 0 certified"].line.color
    assert len(bounds_figure(bounds, blocks=[1, 4], show_weight=True).data) == 6


def test_duplication_heatmap(mem, truth):
    fig = duplication_heatmap(mem, truth, model="org-m")
    (hm,) = fig.data
    assert list(hm.x) == ["unmodified", *map(str, range(6))]
    assert list(hm.y) == ["held out", "1×", "8×", "64×"]
    z = np.array(hm.z)
    assert z.shape == (4, 7)
    np.testing.assert_allclose(z[:, 0], [0, 0, 1, 1])  # unmodified: dup ≥ 8
    np.testing.assert_allclose(z[:, -1], [0, 0, 0, 1])  # last block keeps 64× only
    assert fig.layout.yaxis.title.text == "Duplication count in training"
    only_canaries = duplication_heatmap(mem, truth, model="org-m", sample_kinds=("canary",))
    assert list(only_canaries.data[0].y) == ["1×", "8×", "64×"]


def test_memorization_by_block(mem):
    fig = memorization_by_block(mem, model="org-s")
    assert len(fig.data) == 3 and list(fig.data[0].x) == [0, 1, 2, 3]


def test_missing_columns_are_named(mem, bench):
    with pytest.raises(MissingColumns, match="exact_match"):
        short_circuit_figure(mem.drop(columns="exact_match"), bench)
    with pytest.raises(MissingColumns, match="certified"):
        bounds_figure(pd.DataFrame({"block": [0], "layer": [1], "measured": [1.0]}))


def test_save_writes_html_png_svg(tmp_path, bench):
    paths = save(relative_drop_figure(bench), tmp_path, "fig")
    assert [p.name for p in paths] == ["fig.html", "fig.png", "fig.svg"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in paths[2].read_bytes()[:400]
    assert "plotly.min.js" in paths[0].read_text()
    assert (tmp_path / "plotly.min.js").exists()  # offline HTML: plotly.js once per directory


def _write_run(path, table, df):
    run = Run.open(path, {"table": table})
    run.save(table, "all", df)
    run.finish(table)


def test_figures_command_end_to_end(tmp_path, mem, bench, bounds, truth, capsys):
    runs = tmp_path / "runs"
    _write_run(runs / "mem", "memorization", mem)
    _write_run(runs / "bench", "benchmarks", bench)
    gt = tmp_path / "truth.csv"
    truth.to_csv(gt, index=False)
    out = tmp_path / "figs"
    argv = ["--runs", str(runs), "--out", str(out), "--model", "org-m", "--ground-truth", str(gt)]
    res = figures_main(argv)
    assert isinstance(res["fig4-bounds"], str) and "no bounds table" in res["fig4-bounds"]
    assert "python -m workbench.bounds" in capsys.readouterr().out
    made = ["fig1-short-circuit", "fig2-model-scale", "fig3-relative-drop", "fig5-duplication"]
    for name in made:
        for fmt in ("html", "png", "svg"):
            assert (out / f"{name}.{fmt}").stat().st_size > 0
    # a bounds run (layers + its own memorization table) completes the set
    brun = Run.open(runs / "bounds", {"table": "layers"})
    brun.save("layers", "all", bounds)
    brun.save("memorization", "all", mem[mem.model == "org-m"])
    brun.finish("layers")
    brun.finish("memorization")
    res = figures_main([*argv, "--formats", "html"])
    assert all(not isinstance(r, str) for r in res.values())
    assert (out / "fig4-bounds.html").exists()


def test_figures_command_without_tables_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        figures_main(["--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "f")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: no figure could be made")


def test_duplication_figure_refuses_a_ground_truth_of_other_data(tmp_path, mem, truth):
    """Fig. 5 joins the runs' verdicts to the ground truth by sample id: only when the
    memorization runs scored the data the ground truth describes (the .npy beside it)."""
    from workbench.figures.cli import generate
    from workbench.runs import file_sha256

    gt = tmp_path / "memorized.csv"
    truth.to_csv(gt, index=False)
    data = tmp_path / "memorized.npy"
    np.save(data, np.zeros((len(truth), 64), dtype=np.int64))

    def run_on(name, digest):
        run = Run.open(
            tmp_path / name, {"table": "memorization", "identity": {"data_sha256": digest}}
        )
        run.save("memorization", "all", mem)
        run.finish("memorization")

    run_on("same", file_sha256(data))
    made = generate([tmp_path / "same"], tmp_path / "f", ground_truth=gt, formats=["html"])
    assert not isinstance(made["fig5-duplication"], str)
    run_on("other", "0" * 64)
    res = generate([tmp_path / "other"], tmp_path / "g", ground_truth=gt, formats=["html"])
    assert res["fig5-duplication"].startswith("skipped: ground truth refused")
    assert "000000000000" in res["fig5-duplication"]
    assert (
        not isinstance(res["fig1-short-circuit"], str) or "benchmarks" in res["fig1-short-circuit"]
    )
