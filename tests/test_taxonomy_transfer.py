"""Transfer of the attention-map CNN between models (workbench.taxonomy.transfer)."""

import numpy as np
import pandas as pd
import pytest

from workbench.errors import UserError
from workbench.taxonomy import cnn
from workbench.taxonomy.labels import GUESS_RECALL, TAXONOMIES
from workbench.taxonomy.transfer import Member, align_layers, transfer

rng = np.random.default_rng(0)
CLASSES = TAXONOMIES[GUESS_RECALL]


def test_align_layers_averages_consecutive_groups():
    x = rng.random((5, 6, 4, 4)).astype(np.float32)
    assert align_layers(x, 6) is x
    out = align_layers(x, 3, chunk=2)
    for layer in range(3):  # an independent loop: channel j = mean of layers 2j and 2j + 1
        np.testing.assert_allclose(out[:, layer], (x[:, 2 * layer] + x[:, 2 * layer + 1]) / 2)
    with pytest.raises(UserError, match="not a multiple"):
        align_layers(x, 4)


def _member(name, y, layers, signal_layer, seq=32):
    """Attention-like maps whose class shows as a brighter band in one layer."""
    x = rng.random((len(y), layers, seq, seq)).astype(np.float32) * 0.2
    for c in range(3):
        x[y == c, signal_layer, :, 8 * c : 8 * c + 8] += 1.0
    table = pd.DataFrame({"sample": np.arange(len(y)), GUESS_RECALL: np.array(CLASSES)[y]})
    return Member(name, table, {"mean": x})


def _split(n, seed=0):
    idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n * 2 // 3]), np.sort(idx[n * 2 // 3 :])


@pytest.mark.parametrize("same_signature", [True, False])
def test_transfer_scores_what_the_target_shares(same_signature):
    y = np.repeat(np.arange(3), 60)
    source = _member("a", y, layers=4, signal_layer=1)
    # the deeper target: 8 layers aligned to 4; its signal at layers 2-3 → aligned channel 1
    target = _member("b", y, layers=8, signal_layer=2 if same_signature else 6)
    config = cnn.TrainConfig(epochs=4, dropout=0.0)
    variant = cnn.CNNVariant(6, 10, "mean")
    split = [_split(len(y))]
    out = transfer(source, [target], GUESS_RECALL, split, variants=[variant], config=config)
    runs = out.drop_duplicates(["method", "trained_on", "split", "seed"]).set_index("trained_on")
    assert set(out["method"]) == {"majority", variant.name}
    assert out.loc[out.method == "majority", "min_f1"].eq(0).all()  # one class predicted
    own = runs.loc[(runs.method == variant.name)].loc["b", "min_f1"]
    moved = runs.loc[(runs.method == variant.name)].loc["a", "min_f1"]
    assert own > 0.9  # the target's own maps carry the class
    if same_signature:
        assert moved > 0.9
    else:
        assert moved < 0.6  # a signature in another layer does not transfer
    support = out[(out.method == "majority")].set_index("class")["support"]
    assert support.sum() == len(_split(len(y))[1])


def test_transfer_refuses_different_sets():
    a = _member("a", np.repeat(np.arange(3), 4), 2, 0)
    b = _member("b", np.repeat(np.arange(3), 5), 2, 0)
    with pytest.raises(UserError, match="different sets"):
        transfer(a, [b], GUESS_RECALL, [_split(12)])
