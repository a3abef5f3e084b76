"""The organism suite (v2): Pythia-style GPT-NeoX members and one GPT-Neo, as Hugging Face configs.

A member is a small record (``Member``); ``hf_config`` turns it into the ``transformers`` config
the checkpoint is saved with, so the shipped directories are ordinary Pythia / GPT-Neo ones.
Seeds change the initialisation only: every member reads the same stream in the same order, so
one ground truth (duplicate counts, kinds) serves them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import GPTNeoConfig, GPTNeoXConfig, PretrainedConfig

MAX_POSITIONS = 128


@dataclass(frozen=True)
class Member:
    """One model of the suite: its family, its shape, its seed, how it trains."""

    name: str
    family: str  # "gpt_neox" (Pythia-style) or "gpt_neo"
    d_model: int
    n_layers: int
    n_heads: int
    seed: int = 1
    lr: float = 2e-3
    window_size: int = 32  # GPT-Neo local attention window
    checkpoints: tuple[int, ...] = ()  # training steps saved besides the final one

    def to_dict(self) -> dict:
        return asdict(self)


MAIN_CHECKPOINTS = (100, 300, 700, 1400, 2400)
SUITE: dict[str, Member] = {
    m.name: m
    for m in [
        Member("organism-neox-s", "gpt_neox", d_model=64, n_layers=4, n_heads=4),
        Member(
            "organism-neox-m",
            "gpt_neox",
            d_model=96,
            n_layers=12,
            n_heads=4,
            checkpoints=MAIN_CHECKPOINTS,
        ),
        Member("organism-neox-m-seed2", "gpt_neox", d_model=96, n_layers=12, n_heads=4, seed=2),
        Member("organism-neox-m-seed3", "gpt_neox", d_model=96, n_layers=12, n_heads=4, seed=3),
        Member("organism-neox-deep", "gpt_neox", d_model=48, n_layers=24, n_heads=3),
        Member("organism-neo-m", "gpt_neo", d_model=96, n_layers=12, n_heads=4, lr=1.5e-3),
    ]
}
MAIN_MEMBER = "organism-neox-m"
# stored in half precision (data/ budget): the main member's other seeds
HALF_PRECISION = frozenset({"organism-neox-m-seed2", "organism-neox-m-seed3"})


def padded_vocab(n_tokens: int, multiple: int = 16) -> int:
    return -(-n_tokens // multiple) * multiple


def hf_config(member: Member, vocab_size: int, eos_id: int, pad_id: int) -> PretrainedConfig:
    """The Hugging Face config: Pythia's choices for GPT-NeoX, GPT-Neo-1.3B's for GPT-Neo."""
    common = {
        "vocab_size": padded_vocab(vocab_size),
        "max_position_embeddings": MAX_POSITIONS,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    if member.family == "gpt_neox":
        return GPTNeoXConfig(
            hidden_size=member.d_model,
            num_hidden_layers=member.n_layers,
            num_attention_heads=member.n_heads,
            intermediate_size=4 * member.d_model,
            hidden_act="gelu",
            rotary_pct=0.25,
            rotary_emb_base=10000,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
            hidden_dropout=0.0,
            **common,
        )
    if member.family == "gpt_neo":
        if member.n_layers % 2:
            raise ValueError("GPT-Neo alternates global/local attention: use an even n_layers")
        return GPTNeoConfig(
            hidden_size=member.d_model,
            num_layers=member.n_layers,
            num_heads=member.n_heads,
            intermediate_size=4 * member.d_model,
            attention_types=[[["global", "local"], member.n_layers // 2]],
            window_size=member.window_size,
            activation_function="gelu_new",
            resid_dropout=0.0,
            embed_dropout=0.0,
            attention_dropout=0.0,
            layer_norm_epsilon=1e-5,
            **common,
        )
    raise ValueError(f"unknown family {member.family!r}")
