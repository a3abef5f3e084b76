"""HookedLM against lm-eval's own HFLM, and the intervention on every forward."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from workbench.interventions import CLEAN, ShortCircuit
from workbench.lm_eval_adapter import HookedLM
from workbench.lm_scoring import score_pairs

TASKS = ["tiny_language", "tiny_reasoning"]


def write_tiny_tasks(root: Path, n_docs: int = 8, seed: int = 0) -> Path:
    """Four local lm-eval tasks over the tiny models' vocabulary (w1 … w95), in two groups:
    tiny_language = multiple choice (multi-token answers) + rolling perplexity (texts longer than
    the context), tiny_reasoning = multiple choice (one-token answers) + generate_until."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def words(lo: int, hi: int) -> str:
        return " ".join(f"w{rng.randrange(1, 96)}" for _ in range(rng.randrange(lo, hi)))

    data = {
        "mc": [
            {
                "context": words(2, 9),
                "choices": [" " + words(1, 4) for _ in range(3)],
                "label": rng.randrange(3),
            }
            for _ in range(n_docs)
        ],
        "mc1": [
            {
                "context": words(3, 12),
                "choices": [" " + words(1, 2) for _ in range(4)],
                "label": rng.randrange(4),
            }
            for _ in range(n_docs)
        ],
        "text": [{"text": words(5, 300)} for _ in range(n_docs)],
        "gen": [{"context": words(2, 8), "answer": words(1, 2)} for _ in range(n_docs)],
    }
    for name, rows in data.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def task(name: str, data_name: str, body: str) -> None:
        path = root / f"{data_name}.jsonl"
        head = (
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {path}\ntest_split: test\n"
        )
        (root / f"{name}.yaml").write_text(head + body)

    mc = "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
    mc += "doc_to_target: '{{label}}'\n"
    task("tiny_mc", "mc", mc + "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    task("tiny_mc1", "mc1", mc + "metric_list:\n  - metric: acc\n")
    task(
        "tiny_ppl",
        "text",
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        "doc_to_target: '{{text}}'\nmetric_list:\n  - metric: word_perplexity\n"
        "  - metric: bits_per_byte\n",
    )
    task(
        "tiny_gen",
        "gen",
        "output_type: generate_until\ndoc_to_text: '{{context}}'\n"
        "doc_to_target: ' {{answer}}'\ngeneration_kwargs:\n  until: [' w7']\n"
        "  max_gen_toks: 5\n  do_sample: false\nmetric_list:\n  - metric: exact_match\n",
    )
    (root / "tiny_language.yaml").write_text("group: tiny_language\ntask: [tiny_mc, tiny_ppl]\n")
    (root / "tiny_reasoning.yaml").write_text("group: tiny_reasoning\ntask: [tiny_mc1, tiny_gen]\n")
    return root


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    return write_tiny_tasks(tmp_path_factory.mktemp("tiny-tasks"))


@pytest.fixture(scope="session")
def task_manager(tiny_tasks) -> TaskManager:
    return TaskManager(include_path=str(tiny_tasks), include_defaults=False)


def evaluate(lm, tm, tasks=TASKS, limit=5):
    return simple_evaluate(
        model=lm, tasks=tasks, task_manager=tm, limit=limit, bootstrap_iters=0, log_samples=True
    )


def assert_same_answers(a, b, tol=1e-4):
    """Same responses per sample: log-likelihoods within tol, greedy flags and texts equal."""
    for task in a["samples"]:
        for sa, sb in zip(a["samples"][task], b["samples"][task], strict=True):
            for ra, rb in zip(sa["resps"], sb["resps"], strict=True):
                (xa,), (xb,) = ra, rb
                if isinstance(xa, str):
                    assert xa == xb, task
                elif isinstance(xa, tuple):
                    assert xa[0] == pytest.approx(xb[0], abs=tol), task
                    assert xa[1] == xb[1], task
                else:
                    assert xa == pytest.approx(xb, abs=tol * 10, rel=1e-6), task


@pytest.mark.parametrize("family", ["neox", "neo"])
def test_matches_hflm(family, request, task_manager):
    """Unmodified model: HookedLM answers exactly what lm-eval's HFLM answers on the same
    Hugging Face checkpoint, so every task's accuracy is the same."""
    from lm_eval.models.huggingface import HFLM

    ckpt = request.getfixturevalue(f"tiny_{family}_dir")
    model = request.getfixturevalue(f"tiny_{family}")
    hf = evaluate(HFLM(pretrained=str(ckpt), device="cpu", batch_size=4), task_manager)
    ours = evaluate(HookedLM(model, batch_size=3), task_manager)
    assert_same_answers(hf, ours)
    for task in ("tiny_mc", "tiny_mc1", "tiny_gen"):
        for key, value in hf["results"][task].items():
            if key.split(",")[0] in ("acc", "acc_norm", "exact_match"):
                assert ours["results"][task][key] == value, (task, key)
    ppl = "word_perplexity,none"
    assert ours["results"]["tiny_ppl"][ppl] == pytest.approx(
        hf["results"]["tiny_ppl"][ppl], rel=1e-4
    )


class CountingShortCircuit(ShortCircuit):
    """The same intervention, counting forwards and intervened attention outputs."""

    @property
    def calls(self) -> dict[str, int]:
        return self.__dict__.setdefault("_calls", {"embed": 0, "attn_out": 0})

    def hooks(self, model):
        def count(name, fn=None):
            def hook(act, hook):
                self.calls[name] += 1
                return act if fn is None else fn(act, hook)

            return hook

        hooks = [
            (n, count("attn_out", fn) if n == f"blocks.{self.blocks[0]}.hook_attn_out" else fn)
            for n, fn in super().hooks(model)
        ]
        return [("hook_embed", count("embed")), *hooks]


def _reference_loglikelihood(model, sc, ctx, cont):
    """A plain hooked forward of the whole sequence, no batching, no sharing."""
    tokens = torch.tensor([ctx + cont])
    with torch.inference_mode(), sc.apply(model):
        logprobs = model(tokens)[0].log_softmax(-1)
    idx = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return float(logprobs[idx, torch.tensor(cont)].sum())


def _reference_greedy(model, sc, ctx, n):
    """Greedy decoding without a key-value cache: the full sequence re-run at every step."""
    tokens = list(ctx)
    with torch.inference_mode(), sc.apply(model):
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
    return tokens[len(ctx) :]


@pytest.mark.parametrize(
    "sc",
    [ShortCircuit((1,)), ShortCircuit((0, 2), kind="zero"), ShortCircuit((1,), heads=(0, 3))],
    ids=str,
)
def test_intervention_reaches_every_forward(tiny_model, sc):
    """Loglikelihood (batched, padded, shared), rolling and greedy generation under an
    intervention equal plain hooked forwards, and differ from the clean model's."""
    rng = random.Random(1)
    pairs = [
        (
            tuple(rng.randrange(1, 96) for _ in range(rng.randrange(1, 20))),
            tuple(rng.randrange(1, 96) for _ in range(rng.randrange(1, 5))),
        )
        for _ in range(9)
    ]
    scored = score_pairs(tiny_model, pairs, [CLEAN, sc], batch_size=4)
    for i, (ctx, cont) in enumerate(pairs):
        for s in (CLEAN, sc):
            ref = _reference_loglikelihood(tiny_model, s, list(ctx), list(cont))
            assert scored[s][i][0] == pytest.approx(ref, abs=1e-4)
    assert any(abs(a[0] - b[0]) > 1e-2 for a, b in zip(scored[CLEAN], scored[sc], strict=True))

    lm, clean_lm = HookedLM(tiny_model, sc, batch_size=4), HookedLM(tiny_model, batch_size=4)
    counting = CountingShortCircuit(sc.blocks, sc.heads, sc.kind)
    lm_counting = HookedLM(tiny_model, counting, batch_size=4)
    for _ in range(3):
        ctx = [rng.randrange(1, 96) for _ in range(rng.randrange(2, 12))]
        args = (lm.tok_decode(ctx), {"until": ["zzz"], "max_gen_toks": 8})
        gen = Instance("generate_until", {}, args, 0)
        (out,) = lm.generate_until([gen], disable_tqdm=True)
        assert out == lm.tok_decode(_reference_greedy(tiny_model, sc, ctx, 8))
        assert lm_counting.generate_until([gen], disable_tqdm=True) == [out]
    # every forward of the key-value-cached decoding ran the intervention's hooks
    assert counting.calls["embed"] > 3 and counting.calls["attn_out"] == counting.calls["embed"]
    long_text = " ".join(f"w{i % 95 + 1}" for i in range(300))
    roll = Instance("loglikelihood_rolling", {}, (long_text,), 0)
    assert lm.loglikelihood_rolling([roll], True) != clean_lm.loglikelihood_rolling([roll], True)


def test_sweep_cache_equals_fresh_models(tiny_neox, task_manager):
    """One HookedLM scoring a sweep and switching interventions answers what a fresh HookedLM
    per intervention answers."""
    sweep = [CLEAN, ShortCircuit((0,)), ShortCircuit((1, 2))]
    shared = HookedLM(tiny_neox, sweep=sweep, batch_size=5)
    for sc in sweep:
        shared.intervention = sc
        fresh = HookedLM(tiny_neox, sc, batch_size=2)
        assert_same_answers(evaluate(shared, task_manager), evaluate(fresh, task_manager), tol=1e-5)


def test_padding_is_exact(tiny_neo):
    rng = random.Random(2)
    pairs = [
        (tuple(rng.randrange(1, 96) for _ in range(rng.randrange(1, 40))), (7, 8)) for _ in range(7)
    ]
    one = score_pairs(tiny_neo, pairs, [CLEAN], batch_size=1)[CLEAN]
    many = score_pairs(tiny_neo, pairs, [CLEAN], batch_size=7)[CLEAN]
    assert [a for a, _ in one] == pytest.approx([b for b, _ in many], abs=1e-5)


def test_registered_for_lm_eval(tiny_neox_dir):
    """lm-eval's own entry points find the model by name and read its --model_args."""
    cls = get_model("workbench")
    assert cls is HookedLM
    lm = cls.create_from_arg_string(
        f"model={tiny_neox_dir},blocks=0;2,kind=zero,device=cpu", {"batch_size": 4}
    )
    assert lm.intervention == ShortCircuit((0, 2), kind="zero")
    assert lm.batch_size == 4 and lm.max_length == 128
    lm = cls.create_from_arg_string(f"pretrained={tiny_neox_dir},blocks=1-2,heads=1+3,device=cpu")
    assert lm.intervention == ShortCircuit((1, 2), heads=(1, 3))


def test_lm_eval_command_line(tiny_neox_dir, tiny_tasks, monkeypatch, capsys):
    """lm-eval's own command line runs the registered model with its --model_args."""
    from workbench.lm_eval_adapter import main

    monkeypatch.setattr("sys.argv", ["lm_eval"])
    main(
        [
            "run",
            "--model",
            "workbench",
            "--model_args",
            f"model={tiny_neox_dir},blocks=1",
            "--device",
            "cpu",
            "--tasks",
            "tiny_mc1",
            "--include_path",
            str(tiny_tasks),
            "--limit",
            "3",
            "--batch_size",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert "tiny_mc1" in printed and "'blocks': 1" in printed
