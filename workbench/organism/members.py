"""The organism suite: three Pythia-style GPT-NeoX sizes and one GPT-Neo, as Hugging Face configs.

A member is a small record (``Member``); ``hf_config`` turns it into the ``transformers`` config
the checkpoint is saved with, so the shipped directories are ordinary Pythia / GPT-Neo ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from transformers import GPTNeoConfig, GPTNeoXConfig, PretrainedConfig

MAX_POSITIONS = 128


@dataclass(frozen=True)
class Member:
    """One model of the suite: its family, its shape, and how long it trains."""

    name: str
    family: str  # "gpt_neox" (Pythia-style) or "gpt_neo"
    d_model: int
    n_layers: int
    n_heads: int
    epochs: int = 4
    lr: float = 3e-3
    window_size: int = 16  # GPT-Neo local attention window

    def to_dict(self) -> dict:
        return asdict(self)


SUITE: dict[str, Member] = {
    m.name: m
    for m in [
        Member("organism-neox-s", "gpt_neox", d_model=64, n_layers=4, n_heads=4),
        Member("organism-neox-m", "gpt_neox", d_model=96, n_layers=6, n_heads=4),
        Member("organism-neox-l", "gpt_neox", d_model=128, n_layers=6, n_heads=4),
        Member("organism-neo-m", "gpt_neo", d_model=96, n_layers=6, n_heads=4, lr=1.5e-3),
    ]
}
MAIN_MEMBER = "organism-neox-m"


def padded_vocab(n_tokens: int, multiple: int = 16) -> int:
    return -(-n_tokens // multiple) * multiple


def hf_config(member: Member, vocab_size: int, eos_id: int) -> PretrainedConfig:
    """The Hugging Face config: Pythia's choices for GPT-NeoX, GPT-Neo-1.3B's for GPT-Neo."""
    common = {
        "vocab_size": padded_vocab(vocab_size),
        "max_position_embeddings": MAX_POSITIONS,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
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
