"""The one block-spec parser: ``all``, ``none``, ``3``, ``0,2,5``, ``2-5`` (inclusive) → indices.

Standard library only (the command-line layer checks specs before any heavy import)."""

from __future__ import annotations

from workbench.errors import UserError

SPEC_HELP = "use all, none, 3, 0,2,5 or 2-5"


class BlockSpecError(UserError, ValueError):
    """A block spec that names no valid set of blocks."""


def block_indices(spec: str) -> list[int] | None:
    """The blocks a spec names, unranged (``None``: all of them)."""
    text = spec.strip().lower()
    if text == "all":
        return None
    if text in ("", "none"):
        return []
    blocks: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise BlockSpecError(f"cannot read block spec {spec!r}: {SPEC_HELP}.") from None
        if first < 0:
            raise BlockSpecError(f"block spec {spec!r}: block indices start at 0.")
        if last < first:
            raise BlockSpecError(f"block spec {spec!r}: the range {part} is reversed.")
        blocks.extend(range(first, last + 1))
    return sorted(set(blocks))


def parse_blocks(spec: str, n_layers: int) -> list[int]:
    """The sorted block indices a spec names in a model of ``n_layers`` blocks."""
    blocks = block_indices(spec)
    if blocks is None:
        return list(range(n_layers))
    bad = [b for b in blocks if not 0 <= b < n_layers]
    if bad:
        raise BlockSpecError(f"blocks {bad} out of range: the model has {n_layers} blocks.")
    return blocks
