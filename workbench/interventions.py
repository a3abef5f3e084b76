"""Interventions as data: a small record that becomes TransformerLens hooks inside a ``with``.

The paper's intervention (Menta et al. 2025, "attention short-circuiting") makes the attention
probabilities of block i the identity: every token attends only to itself. Nothing else changes:
values, output projection, biases, LayerNorms and the MLP are the model's own. For head h the
attention output at position t becomes its own value, so the block's attention output is

    A_sc(u)_t = Σ_h v^h_t W^h_O + b_O,      v^h = u W^h_V + b^h_V,  u = LN1(x)

which we write at ``blocks.<i>.hook_attn_out`` from the values captured at
``blocks.<i>.attn.hook_v`` in the same forward call. During KV-cached decoding ``hook_v`` sees only
the new positions (TransformerLens appends to the cache after the hook), so the new token attends to
itself alone, as it should. A subset of heads replaces only those heads' contributions:
``attn_out + Σ_{h∈H} (v^h_t − z^h_t) W^h_O``, with z^h the head's usual output (``hook_z``).

Kinds:
- ``"identity"``: the paper's short-circuit, above.
- ``"zero"``: zero-ablation of the attention output (all heads: ``attn_out = 0``, bias included;
  a subset of heads: their contributions Σ_{h∈H} z^h W^h_O are removed, b_O stays).

Hooks exist only inside ``ShortCircuit.apply(model)``: TransformerLens' ``model.hooks`` context
removes them on exit, also when the body raises.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from workbench.blocks import parse_blocks

Kind = Literal["identity", "zero"]
KINDS: tuple[str, ...] = ("identity", "zero")
Hook = tuple[str, Callable]


@dataclass(frozen=True)
class ShortCircuit:
    """Which blocks (and optionally which heads) to intervene on, and how.

    ``ShortCircuit(())`` is the unmodified model. Blocks and heads may be given as an int or any
    iterable of ints; they are stored as sorted, unique tuples, so two records that mean the same
    thing compare and hash equal.
    """

    blocks: tuple[int, ...] | Iterable[int] | int
    heads: tuple[int, ...] | Iterable[int] | int | None = None
    kind: str = "identity"  # one of KINDS; checked in __post_init__ with a clear message

    def __post_init__(self) -> None:
        blocks = (self.blocks,) if _scalar(self.blocks) else self.blocks
        object.__setattr__(self, "blocks", _sorted_unique(blocks, "block"))
        if self.heads is not None:
            heads = (self.heads,) if _scalar(self.heads) else self.heads
            object.__setattr__(self, "heads", _sorted_unique(heads, "head"))
            if not self.heads:
                raise ValueError("heads=() selects no head; use heads=None for all heads.")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; choose one of {KINDS}.")

    @property
    def is_clean(self) -> bool:
        return not self.blocks

    @property
    def label(self) -> str:
        """Short, stable text for tables: ``none``, ``identity:3``, ``zero:0,1[h2,5]``."""
        if self.is_clean:
            return "none"
        heads = "" if self.heads is None else "[h" + ",".join(map(str, self.heads)) + "]"
        return f"{self.kind}:{','.join(map(str, self.blocks))}{heads}"

    @classmethod
    def from_label(cls, label: str) -> ShortCircuit:
        """The record a ``label`` names (its exact inverse); ``ValueError`` for other text."""
        if label == "none":
            return cls(())
        m = _LABEL.fullmatch(label)
        if m is None:
            raise ValueError(
                f"not an intervention label: {label!r} (like none, identity:3, zero:0,1[h2,5])"
            )
        heads = None if m["heads"] is None else tuple(map(int, m["heads"].split(",")))
        return cls(tuple(map(int, m["blocks"].split(","))), heads, m["kind"])

    @property
    def single_block(self) -> int | None:
        """The block when this is one whole block (all its heads), else None."""
        return self.blocks[0] if len(self.blocks) == 1 and self.heads is None else None

    def __str__(self) -> str:
        return self.label

    def columns(self) -> dict[str, str]:
        """The columns every results table uses to name an intervention (clean: kind "none")."""
        return {
            "intervention": self.label,
            "kind": "none" if self.is_clean else self.kind,
            "blocks": ",".join(map(str, self.blocks)),
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        d["blocks"] = list(self.blocks)
        d["heads"] = None if self.heads is None else list(self.heads)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> ShortCircuit:
        heads = d.get("heads")
        return cls(
            tuple(d["blocks"]), None if heads is None else tuple(heads), d.get("kind", "identity")
        )

    @classmethod
    def from_json(cls, s: str) -> ShortCircuit:
        return cls.from_dict(json.loads(s))

    def hooks(self, model: HookedTransformer) -> list[Hook]:
        """The (hook name, function) pairs for ``model.hooks`` / ``run_with_hooks``."""
        self.validate(model)
        hooks: list[Hook] = []
        for block in self.blocks:
            hooks.extend(_block_hooks(model, block, self.heads, self.kind))
        return hooks

    @contextmanager
    def apply(self, model: HookedTransformer) -> Iterator[HookedTransformer]:
        """Run the body with the intervention on; its hooks are gone afterwards, come what may."""
        with model.hooks(fwd_hooks=self.hooks(model)):
            yield model

    def validate(self, model: HookedTransformer) -> None:
        cfg = model.cfg
        bad = [b for b in self.blocks if not 0 <= b < cfg.n_layers]
        if bad:
            raise ValueError(f"blocks {bad} out of range: the model has {cfg.n_layers} blocks.")
        if self.heads is not None:
            bad = [h for h in self.heads if not 0 <= h < cfg.n_heads]
            if bad:
                raise ValueError(f"heads {bad} out of range: blocks have {cfg.n_heads} heads.")
        if cfg.use_normalization_before_and_after or cfg.original_architecture in _POST_NORM:
            raise NotImplementedError(
                f"{cfg.original_architecture} normalizes the attention output before "
                "hook_attn_out; short-circuiting it is not implemented."
            )


_LABEL = re.compile(
    r"(?P<kind>\w+):(?P<blocks>[0-9]+(?:,[0-9]+)*)(?:\[h(?P<heads>[0-9]+(?:,[0-9]+)*)\])?"
)
_POST_NORM = {"Olmo2ForCausalLM", "Olmo3ForCausalLM"}


def single_block_sweep(blocks: Iterable[int], kind: Kind = "identity") -> list[ShortCircuit]:
    """One intervention per block, each on that block alone."""
    return [ShortCircuit((b,), kind=kind) for b in blocks]


def interventions_from(
    blocks: str,
    n_layers: int,
    *,
    kind: str = "identity",
    clean: bool = True,
    block_sets: Iterable[str] = (),
) -> list[ShortCircuit]:
    """The one builder of a command's intervention list from its flags: the clean model (unless
    ``clean=False``), each block of the spec ``blocks`` alone, then each spec of ``block_sets``
    short-circuited together; duplicates dropped, order kept."""
    sweep = [CLEAN] if clean else []
    sweep += single_block_sweep(parse_blocks(blocks, n_layers), kind=kind)  # type: ignore[arg-type]
    sweep += [ShortCircuit(tuple(parse_blocks(s, n_layers)), kind=kind) for s in block_sets]
    return list(dict.fromkeys(sweep))


def _scalar(x: object) -> bool:
    """One index rather than a collection (``1.5``, ``True``: refused as indices later)."""
    return not isinstance(x, Iterable) or isinstance(x, str | bytes)


def _sorted_unique(values: Iterable[int], what: str) -> tuple[int, ...]:
    """Integers (Python or numpy) only: ``1.5`` or ``True`` is not block 1."""
    out = []
    for v in values:
        try:
            if isinstance(v, bool) or type(v).__name__ == "bool_":
                raise TypeError
            out.append(operator.index(v))
        except TypeError:
            raise TypeError(f"{what} indices must be integers, got {v!r}") from None
    return tuple(sorted(set(out)))


def _block_hooks(
    model: HookedTransformer, block: int, heads: tuple[int, ...] | None, kind: Kind
) -> list[Hook]:
    attn = model.blocks[block].attn
    prefix = f"blocks.{block}"
    captured: dict[str, Tensor] = {}

    def capture(name: str) -> Callable:
        def hook(act: Tensor, hook: HookPoint) -> None:
            captured[name] = act

        return hook

    def per_head(act: Float[Tensor, "batch pos head d_head"]) -> Tensor:
        """Expand grouped key/value heads to one per query head, then keep the selected heads."""
        if act.shape[2] != model.cfg.n_heads:
            act = act.repeat_interleave(model.cfg.n_heads // act.shape[2], dim=2)
        return act if heads is None else act[:, :, list(heads)]

    def w_o() -> Float[Tensor, "head d_head d_model"]:
        return attn.W_O if heads is None else attn.W_O[list(heads)]

    def values(attn_out: Tensor) -> Tensor:
        """The values at attn_out's positions: the last ones, when a forward computes the
        attention output only from some position on (``workbench.lean_forward``)."""
        v = per_head(captured.pop("v"))
        return v[:, v.shape[1] - attn_out.shape[1] :]

    def replace(attn_out: Float[Tensor, "batch pos d_model"], hook: HookPoint) -> Tensor:
        if kind == "zero" and heads is None:
            return torch.zeros_like(attn_out)
        if kind == "identity" and heads is None:
            return torch.einsum("bphd,hdm->bpm", values(attn_out), w_o()) + attn.b_O
        z = per_head(captured.pop("z"))
        if kind == "zero":
            return attn_out - torch.einsum("bphd,hdm->bpm", z, w_o())
        return attn_out + torch.einsum("bphd,hdm->bpm", values(attn_out) - z, w_o())

    hooks: list[Hook] = []
    if kind == "identity":
        hooks.append((f"{prefix}.attn.hook_v", capture("v")))
    if heads is not None:
        hooks.append((f"{prefix}.attn.hook_z", capture("z")))
    hooks.append((f"{prefix}.hook_attn_out", replace))
    return hooks


CLEAN = ShortCircuit(())
