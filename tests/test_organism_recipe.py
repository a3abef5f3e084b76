"""Retraining with the documented recipe reproduces the shipped organism (slow: minutes).

    pytest -m slow tests/test_organism_recipe.py

The main member is retrained from scratch exactly as shipped (same corpus, seeds and thread
count, read from its training_log.json) and its gate figures are compared with the shipped
ones. A reduced recipe (smallest member, half the corpus, fewer epochs) checks the command runs
end to end and writes a complete, loadable checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.organism import members, registry, train

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    """Run only when selected with ``-m slow`` (a plain ``pytest`` run, as in CI, skips these)."""
    if "slow" not in (request.config.getoption("markexpr") or "") or "not slow" in (
        request.config.getoption("markexpr") or ""
    ):
        pytest.skip("slow: run with -m slow")


def test_reduced_recipe_runs(tmp_path):
    argv = ["--member", "organism-neox-s", "--out", str(tmp_path), "--rows", "2000"]
    assert train.main([*argv, "--epochs", "2", "--threads", "2"]) == 0
    out = tmp_path / "organism-neox-s"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "training_log.json"):
        assert (out / f).is_file()
    gates = json.loads((out / "gates.json").read_text())
    assert gates["exact_match_by_group"]["control_canary"]["exact_match"] <= 0.05
    assert (tmp_path / "samples" / "memorized_samples.npy").is_file()


def test_main_member_retrains_to_the_shipped_figures(tmp_path):
    name = members.MAIN_MEMBER
    shipped_dir = registry.EMBEDDED_MODELS[name]
    shipped_log = json.loads((shipped_dir / "training_log.json").read_text())
    threads = str(shipped_log["threads"])
    assert train.main(["--member", name, "--out", str(tmp_path), "--threads", threads]) == 0
    new_dir = tmp_path / name
    np.testing.assert_array_equal(
        np.load(tmp_path / "samples" / "memorized_samples.npy"),
        np.load(registry.DEFAULT_MEMORIZED_SET),
    )
    new_log = json.loads((new_dir / "training_log.json").read_text())
    assert new_log["loss_curve"][-1]["loss"] == pytest.approx(
        shipped_log["loss_curve"][-1]["loss"], abs=0.05
    )
    new = json.loads((new_dir / "gates.json").read_text())
    old = json.loads((shipped_dir / "gates.json").read_text())
    for group, figures in old["exact_match_by_group"].items():
        assert new["exact_match_by_group"][group]["exact_match"] == pytest.approx(
            figures["exact_match"], abs=0.25
        ), group
    for task, figures in old["tasks"].items():
        assert new["tasks"][task]["acc"] == pytest.approx(figures["acc"], abs=0.1), task
