"""Tiny random Hugging Face checkpoints (GPT-NeoX, GPT-Neo, GPT-2, OPT, GPT-J, Llama, Mistral,
Qwen2) written by the tests themselves, and tiny TransformerLens configs built in place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformerConfig

VOCAB = 96


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def tiny_config(**overrides: Any) -> HookedTransformerConfig:
    """A tiny ``HookedTransformerConfig`` (2 LayerNorm/GELU blocks of 4 heads, d_model 32, d_mlp
    TransformerLens' default 4·d_model); any field can be overridden by keyword."""
    from transformer_lens import HookedTransformerConfig

    fields: dict[str, Any] = dict(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_vocab=VOCAB,
        n_ctx=64,
        act_fn="gelu",
        normalization_type="LN",
    )
    return HookedTransformerConfig(**{**fields, **overrides})


def tiny_llama(seed: int = 0, **overrides: Any):
    """A random Llama-style ``HookedTransformer``: grouped-query attention (2 key/value heads for
    4 query heads), RMSNorm, gated SiLU MLP, rotary."""
    from transformer_lens import HookedTransformer

    torch.manual_seed(seed)
    llama = dict(
        n_key_value_heads=2,
        d_mlp=64,
        act_fn="silu",
        gated_mlp=True,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        original_architecture="LlamaForCausalLM",
    )
    return HookedTransformer(tiny_config(**{**llama, **overrides})).eval()


def write_tiny_neox(path: Path, *, seed: int = 0, n_layer: int = 3) -> Path:
    """GPT-NeoX as Pythia: parallel residual, rotary on a quarter of each head, untied unembed."""
    return write_tiny(path, "neox", seed=seed, num_hidden_layers=n_layer)


def write_tiny_neo(path: Path, *, seed: int = 0, n_layer: int = 4) -> Path:
    """GPT-Neo: sequential blocks, alternating global and local (windowed) attention."""
    return write_tiny(
        path,
        "neo",
        seed=seed,
        num_layers=n_layer,
        attention_types=[[["global", "local"], n_layer // 2]],
    )


_SPECIAL = dict(bos_token_id=0, eos_token_id=0)
_LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    **_SPECIAL,
)
# family: (transformers config class, its tiny fields)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "neox": (
        "GPTNeoXConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=128,
            rotary_pct=0.25,
            max_position_embeddings=128,
            use_parallel_residual=True,
            tie_word_embeddings=False,
            hidden_act="gelu",
            **_SPECIAL,
        ),
    ),
    "neo": (
        "GPTNeoConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_layers=4,
            num_heads=4,
            intermediate_size=128,
            attention_types=[[["global", "local"], 2]],
            window_size=8,
            max_position_embeddings=128,
            **_SPECIAL,
        ),
    ),
    "gpt2": (
        "GPT2Config",
        dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, **_SPECIAL),
    ),
    "opt": (
        "OPTConfig",
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            ffn_dim=128,
            num_attention_heads=4,
            max_position_embeddings=128,
            word_embed_proj_dim=32,
            pad_token_id=1,
            **_SPECIAL,
        ),
    ),
    "gptj": (
        "GPTJConfig",
        dict(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            rotary_dim=4,
            n_positions=128,
            **_SPECIAL,
        ),
    ),
    "llama": ("LlamaConfig", _LLAMA_LIKE),
    "mistral": ("MistralConfig", dict(_LLAMA_LIKE, sliding_window=None)),
    "qwen2": ("Qwen2Config", _LLAMA_LIKE),
}


def write_tiny(
    path: Path, family: str, *, seed: int = 0, tokenizer: bool = True, **overrides: Any
) -> Path:
    """A random checkpoint of ``family`` (a key of ``FAMILIES``) saved by ``save_pretrained``;
    ``overrides`` replace fields of its config."""
    import transformers
    from transformers import AutoModelForCausalLM

    config_class, fields = FAMILIES[family]
    cfg = getattr(transformers, config_class)(**{**fields, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    _perturb(model)
    return _save(model, path, tokenizer=tokenizer)


def _perturb(model: torch.nn.Module) -> None:
    """Random init leaves LayerNorms at 1/0 and biases at 0: make every parameter matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn_like(p))
            elif "embed" in name or "wte" in name or "wpe" in name:
                p.normal_(0, 0.5)
            else:
                p.normal_(0, 0.6 / p.shape[-1] ** 0.5)


def _save(model, path: Path, tokenizer: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(path)
    if tokenizer:
        _tokenizer().save_pretrained(path)
    return path
