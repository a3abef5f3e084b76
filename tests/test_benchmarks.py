"""The benchmark sweep: shared passes equal fresh lm-eval runs, tidy table, groups, resume, CLI."""

from __future__ import annotations

import os

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lm_eval
from lm_eval.tasks import TaskManager
from test_lm_eval_adapter import write_tiny_tasks

from workbench import benchmarks as bm
from workbench import lm_eval_tasks as lt
from workbench.interventions import CLEAN, ShortCircuit
from workbench.lm_eval_adapter import HookedLM
from workbench.organism import registry
from workbench.runner import Unit
from workbench.runs import RunConfigMismatch, part_name, read_run

TASKS = ["tiny_language", "tiny_reasoning"]


@pytest.fixture(scope="module")
def tiny_tasks(tmp_path_factory):
    return write_tiny_tasks(tmp_path_factory.mktemp("bench-tasks"))


@pytest.fixture(scope="module")
def task_manager(tiny_tasks):
    return TaskManager(include_path=str(tiny_tasks), include_defaults=False)


def config(tiny_tasks, out, **kw) -> bm.BenchmarkConfig:
    base = dict(
        tasks=TASKS,
        include_path=[str(tiny_tasks)],
        limit=4,
        batch_size=3,
        device="cpu",
        out=str(out),
    )
    return bm.BenchmarkConfig(**{**base, **kw})


def test_sweep_equals_fresh_evaluations(tiny_neox, tiny_tasks, task_manager, tmp_path):
    """Every row of the shared-pass sweep is what a fresh lm-eval run of that configuration
    (its own HookedLM, batch size 1, nothing shared) reports."""
    cfg = config(tiny_tasks, tmp_path / "run", block_sets=["0-1"])
    table, summary = bm.run_benchmarks(cfg, model=tiny_neox)
    assert list(table.columns) == bm.COLUMNS
    sweep = [CLEAN, *(ShortCircuit((b,)) for b in range(3)), ShortCircuit((0, 1))]
    assert set(table.intervention) == {sc.label for sc in sweep}
    assert set(table.task) == {"tiny_mc", "tiny_mc1", "tiny_ppl", "tiny_gen"}
    assert dict(zip(table.task, table.group, strict=True)) == {
        "tiny_mc": "language",
        "tiny_ppl": "language",
        "tiny_mc1": "reasoning",
        "tiny_gen": "reasoning",
    }
    for sc in sweep:
        res = lm_eval.simple_evaluate(
            model=HookedLM(tiny_neox, sc, batch_size=1),
            tasks=TASKS,
            task_manager=task_manager,
            limit=4,
            log_samples=False,
        )
        fresh = pd.DataFrame(lt.result_rows(res, {}, None)).set_index(["task", "metric", "filter"])
        ours = table[table.intervention == sc.label].set_index(["task", "metric", "filter"])
        assert sorted(ours.index) == sorted(fresh.index)
        for key, row in fresh.iterrows():
            assert ours.loc[key, "value"] == pytest.approx(row.value, rel=1e-5), (sc, key)
            assert ours.loc[key, "stderr"] == pytest.approx(row.stderr, rel=1e-5, nan_ok=True)
    # the scores move under short-circuiting
    ppl = table[(table.task == "tiny_ppl") & (table.metric == "word_perplexity")]
    assert ppl.value.nunique() == len(sweep)
    # summary: one row per intervention and group, clean drop 0
    assert len(summary) == 2 * len(sweep)
    assert set(summary.group) == {"language", "reasoning"}
    clean = summary[summary.intervention == "none"]
    assert (clean.relative_drop == 0).all()
    assert list(dict.fromkeys(summary.intervention)) == [sc.label for sc in sweep]


def test_resume_skips_finished_units(tiny_neox, tiny_tasks, tmp_path, monkeypatch):
    cfg = config(tiny_tasks, tmp_path / "run", tasks=["tiny_mc", "tiny_gen"], blocks="0,2", limit=3)
    first, _ = bm.run_benchmarks(cfg, model=tiny_neox)
    calls = []
    real = lm_eval.simple_evaluate
    monkeypatch.setattr(lm_eval, "simple_evaluate", lambda **kw: calls.append(kw) or real(**kw))
    # a unit is (model, task item) with every intervention: removing tiny_gen's part reruns it
    unit = Unit(
        tiny_neox.cfg.model_name, None, (CLEAN, ShortCircuit(0), ShortCircuit(2)), task="tiny_gen"
    )
    (tmp_path / "run" / "parts" / "benchmarks" / f"{part_name(unit.key)}.parquet").unlink()
    again, _ = bm.run_benchmarks(cfg, model=tiny_neox)
    assert [c["tasks"] for c in calls] == [["tiny_gen"]] * 3
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    bm.run_benchmarks(cfg, model=tiny_neox)
    assert len(calls) == 3
    with pytest.raises(RunConfigMismatch):
        bm.run_benchmarks(config(tiny_tasks, tmp_path / "run", limit=2), model=tiny_neox)


def test_main_cli(tiny_neox_dir, tiny_tasks, tmp_path, capsys):
    out = tmp_path / "cli"
    bm.main(
        [
            "--model",
            str(tiny_neox_dir),
            "--tasks",
            "tiny_mc1",
            "tiny_gen",
            "--include-path",
            str(tiny_tasks),
            "--blocks",
            "1",
            "--limit",
            "3",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--groups",
            "language=tiny_gen",
            "reasoning=tiny_mc1",
            "--bootstrap-iters",
            "10",
        ]
    )
    printed = capsys.readouterr().out
    assert "identity:1" in printed and "drop language" in printed and "acc reasoning" in printed
    table, meta = read_run(out, bm.TABLE)
    assert meta["config"]["groups"] == {"language": ["tiny_gen"], "reasoning": ["tiny_mc1"]}
    groups = set(zip(table.task, table.group, strict=True))
    assert groups == {("tiny_gen", "language"), ("tiny_mc1", "reasoning")}
    summary, _ = read_run(out, bm.SUMMARY)
    assert set(summary.intervention) == {"none", "identity:1"}


def test_group_of():
    assert lt.group_of("lambada_openai", [], None) == "language"
    assert lt.group_of("arc_easy", [], None) == "reasoning"
    assert lt.group_of("mmlu_anatomy", ["mmlu_stem", "mmlu"], None) == "reasoning"
    assert lt.group_of("syntax", ["organism_language"], None) == "language"
    assert lt.group_of("piqa", [], {"reasoning": ["piqa"]}) == "reasoning"
    assert lt.group_of("x", ["my_group"], {"language": ["my_group"]}) == "language"
    assert lt.group_of("unknown_task", [], None) == "other"


def test_summarize_relative_drop():
    rows = []
    for sc, accs in {"none": (0.8, 0.5, 0.4), "identity:1": (0.4, 0.5, 0.1)}.items():
        for task, group, acc in zip(
            ("a", "b", "c"), ("language", "language", "reasoning"), accs, strict=True
        ):
            blocks = "" if sc == "none" else "1"
            rows.append(
                dict(
                    model="m",
                    task=task,
                    group=group,
                    intervention=sc,
                    kind="identity",
                    blocks=blocks,
                    metric="acc",
                    filter="none",
                    value=acc,
                )
            )
            rows.append({**rows[-1], "metric": "word_perplexity", "value": 10.0})
    s = bm.summarize(pd.DataFrame(rows)).set_index(["intervention", "group"])
    assert s.loc[("identity:1", "language"), "accuracy"] == pytest.approx(0.45)
    assert s.loc[("identity:1", "language"), "relative_drop"] == pytest.approx((0.5 + 0.0) / 2)
    assert s.loc[("identity:1", "reasoning"), "relative_drop"] == pytest.approx(0.75)
    assert "drop reasoning" in bm.format_summary(s.reset_index())


organism = pytest.mark.skipif(
    not (
        getattr(registry, "TASKS_DIR", None)
        and registry.TASKS_DIR.is_dir()
        and registry.DEFAULT_MODEL
        and registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL].is_dir()
    ),
    reason="the organism's model and tasks are not shipped yet",
)


@organism
def test_organism_matches_hflm():
    """The unmodified organism: HookedLM's per-sample answers are HFLM's, accuracies equal."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from workbench.models import load_model

    tm = TaskManager(include_path=str(registry.TASKS_DIR), include_defaults=False)
    tasks = list(tm.all_groups)
    path = registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL]
    kw = dict(tasks=tasks, task_manager=tm, limit=20, bootstrap_iters=0)
    hf = lm_eval.simple_evaluate(model=HFLM(pretrained=str(path), device="cpu", batch_size=8), **kw)
    ours = lm_eval.simple_evaluate(model=HookedLM(load_model(path, device="cpu")), **kw)
    assert set(hf["samples"]) == set(ours["samples"]) and len(hf["samples"]) >= 4
    for task in hf["samples"]:
        assert len(hf["samples"][task]) == 20
        for a, b in zip(hf["samples"][task], ours["samples"][task], strict=True):
            for (ra,), (rb,) in zip(a["resps"], b["resps"], strict=True):
                assert ra[0] == pytest.approx(rb[0], abs=1e-4) and ra[1] == rb[1]
        for key, value in hf["results"][task].items():
            if key.startswith("acc"):
                assert ours["results"][task][key] == value, (task, key)


@organism
def test_organism_default_sweep(tmp_path):
    """Defaults: the organism's model and its local task groups, fully offline."""
    table, summary = bm.run_benchmarks(
        bm.BenchmarkConfig(blocks="0", limit=10, device="cpu", out=str(tmp_path / "org"))
    )
    assert {"language", "reasoning"} <= set(table.group)
    assert set(summary.intervention) == {"none", "identity:0"}
    clean = table[(table.intervention == "none") & (table.metric == "acc")]
    assert (clean.value > 0).all()


@organism
def test_organism_tasks_are_the_default(tmp_path):
    """With no --tasks, the sweep runs the organism's local task groups, offline, and groups
    each task as language or reasoning by its lm-eval group. (The code-closing task joins its
    choices to the context with no delimiter, so it needs the organism's own tokenizer: another
    vocabulary may merge a bracket into the context, which the adapter refuses.)"""
    from workbench.models import load_model

    cfg = bm.BenchmarkConfig(blocks="1", limit=3, device="cpu", out=str(tmp_path / "org"))
    table, summary = bm.run_benchmarks(cfg, model=load_model(device="cpu"))
    assert table.task.str.startswith("organism_").all()
    assert set(table.group) == {"language", "reasoning"}
    assert set(summary.intervention) == {"none", "identity:1"}
