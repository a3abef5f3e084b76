"""An lm-evaluation-harness model (``LM``) that runs a HookedTransformer under an intervention.

``HookedLM`` answers the harness's three request types with the intervention on every forward:

- ``loglikelihood``: tokenized exactly as lm-eval's own ``HFLM`` does (context + continuation
  encoded together, the continuation's tokens scored, left truncation to the model's context),
  batched longest-first with right padding. Padding is exact: attention is causal, so a real
  position never sees the pad tokens after it. Requests whose model input is the same token
  sequence (the one-token answers of a multiple-choice question) share one forward.
- ``loglikelihood_rolling``: lm-eval's own disjoint rolling windows, scored as above.
- ``generate_until``: greedy decoding with TransformerLens' key-value cache, one request at a
  time (no padding), stopped at the end-of-text token, a stop string, or ``max_gen_toks``.

Several interventions at once (``sweep=``): the first loglikelihood call on a set of requests
scores them under *every* intervention of the sweep, sharing the work they have in common: one
clean pass per batch keeps the residual stream entering each intervened block, and each
intervention runs only from its lowest intervened block on (``workbench.lm_scoring``). The answers
are cached by token sequence and intervention, so running lm-eval again with ``lm.intervention``
set to another member of the sweep costs nothing but lm-eval's own bookkeeping, and lm-eval does
every metric, filter, aggregation and standard error itself.

Registered as lm-eval model ``workbench`` (alias ``hooked``) once this module is imported; lm-eval's
own command line, with the model registered::

    python -m workbench.lm_eval_adapter run --model workbench \
        --model_args model=path/to/ckpt,blocks=3,kind=identity --tasks ... --batch_size 16

In ``--model_args`` commas separate arguments, so block and head lists use ``;`` or ``+``
(``blocks=0;2``, ``blocks=2-4``, ``heads=1+3``).
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

from workbench.errors import UserError
from workbench.interventions import CLEAN, ShortCircuit, parse_blocks
from workbench.lm_scoring import Answer, score_pairs

log = logging.getLogger(__name__)


def _tokenizer(model: HookedTransformer, tokenizer=None):
    """The checkpoint's tokenizer with its own defaults.

    TransformerLens reloads the tokenizer with ``add_bos_token=True``; lm-eval's HFLM uses the
    tokenizer as saved (Pythia and GPT-Neo add no BOS), so we reload it as saved, from the
    local files TransformerLens already read, and fall back to TransformerLens' one.
    """
    from transformers import AutoTokenizer

    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer
    if model.tokenizer is None and tokenizer is None:
        raise UserError(
            f"{model.cfg.model_name} has no tokenizer, and benchmarks are text: give the model a "
            "checkpoint with tokenizer files (or HookedLM(tokenizer=...))."
        )
    source = tokenizer or model.tokenizer.name_or_path
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as err:
        log.warning(
            "cannot reload tokenizer %r as saved (%s); using TransformerLens' one, "
            "which may prepend a BOS token HFLM would not",
            source,
            err,
        )
        return model.tokenizer


def _parse_list(spec: str | int | Iterable[int] | None, n: int) -> tuple[int, ...] | None:
    """``3``, ``"0;2"``, ``"0+2"``, ``"2-4"``, ``"all"`` or a sequence → indices."""
    if spec is None:
        return None
    if isinstance(spec, int):
        return (spec,)
    if isinstance(spec, str):
        return tuple(parse_blocks(spec.replace(";", ",").replace("+", ","), n))
    return tuple(spec)


class HookedLM(TemplateLM):
    """lm-eval model: a HookedTransformer with an intervention on every forward.

    Args:
        model: a ``HookedTransformer``, or anything ``workbench.models.load_model`` takes
            (``pretrained=`` is accepted as an alias, as for lm-eval's ``hf`` model).
        intervention: a ``ShortCircuit``; or build one from ``blocks`` / ``heads`` / ``kind``.
        sweep: interventions to score together with the current one on every loglikelihood
            call (see the module docstring); switch between them with ``lm.intervention = sc``.
        batch_size: sequences per forward (``"auto"`` falls back to 16).
        max_length: context length; the model's ``n_ctx`` by default.
        max_gen_toks: default generation budget when a task does not set one.
        tokenizer: a tokenizer or its path; by default the checkpoint's own tokenizer as
            Hugging Face loads it (see ``_tokenizer``), so requests tokenize as under HFLM.
    """

    def __init__(
        self,
        model: HookedTransformer | str | os.PathLike | None = None,
        intervention: ShortCircuit | None = None,
        *,
        pretrained: str | None = None,
        blocks: str | int | Sequence[int] | None = None,
        heads: str | int | Sequence[int] | None = None,
        kind: str = "identity",
        tokenizer=None,
        sweep: Sequence[ShortCircuit] = (),
        batch_size: int | str = 16,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        device: str = "auto",
        dtype: str = "float32",
        **unused,
    ) -> None:
        super().__init__()
        unused.pop("max_batch_size", None)
        if unused:
            log.warning("HookedLM ignores arguments %s", sorted(unused))
        if not isinstance(model, HookedTransformer):
            from workbench.models import load_model

            model = load_model(model or pretrained, device=device, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = _tokenizer(model, tokenizer)
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        if intervention is None:
            block_ids = _parse_list(blocks, n_layers) or ()
            intervention = ShortCircuit(block_ids, _parse_list(heads, n_heads), kind)  # type: ignore[arg-type]
        self.sweep = list(dict.fromkeys([intervention, *sweep]))
        for sc in self.sweep:
            sc.validate(model)
        self._intervention = intervention
        if batch_size == "auto" or str(batch_size).startswith("auto"):
            log.info("HookedLM: batch_size=auto is not supported, using 16")
            batch_size = 16
        self.batch_size = int(batch_size)
        self._max_length = int(max_length) if max_length else None
        self._max_gen_toks = int(max_gen_toks)
        self._device = model.cfg.device
        self._cache: dict[ShortCircuit, dict] = defaultdict(dict)

    # -- the intervention -------------------------------------------------------------------
    @property
    def intervention(self) -> ShortCircuit:
        return self._intervention

    @intervention.setter
    def intervention(self, sc: ShortCircuit) -> None:
        sc.validate(self.model)
        if sc not in self.sweep:
            self.sweep.append(sc)
        self._intervention = sc

    def clear_cache(self) -> None:
        """Forget every answer computed so far (they are kept per token sequence otherwise)."""
        self._cache.clear()

    # -- what lm-eval asks of a TemplateLM ----------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length or self.model.cfg.n_ctx

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "").replace("/", "__")

    def get_model_info(self) -> dict:
        return {"model": self.model.cfg.model_name, "intervention": self.intervention.to_dict()}

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        """As HFLM with default arguments: the tokenizer's own special-token behaviour, except
        that a string already starting with the prefix token gets no second one."""
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        prefix = self.tokenizer.decode(self.prefix_token_id)
        if add_special_tokens is None and prefix and string.startswith(prefix):
            kw = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **kw)

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[Answer]:
        pairs = [(tuple(ctx), tuple(cont)) for _, ctx, cont in requests]
        cache = self._cache[self.intervention]
        missing = list(dict.fromkeys(p for p in pairs if p not in cache))
        if missing:
            scored = score_pairs(
                self.model,
                missing,
                [self.intervention, *self.sweep],
                batch_size=self.batch_size,
                max_length=self.max_length,
                progress=not disable_tqdm,
            )
            for sc, answers in scored.items():
                self._cache[sc].update(zip(missing, answers, strict=True))
        answers = [cache[p] for p in pairs]
        for (request, _, _), answer in zip(requests, answers, strict=True):
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, answer)
        return answers

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-string log-likelihood over lm-eval's disjoint rolling windows (as HFLM)."""
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owners.append(i)
        totals = [0.0] * len(requests)
        answers = self._loglikelihood_tokens(windows, disable_tqdm)
        for i, (ll, _) in zip(owners, answers, strict=True):
            totals[i] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until a stop string (as HFLM, batch size 1)."""
        cache = self._cache[self.intervention]
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc=f"generate_until {self.intervention}"):
            context, gen_kwargs = req.args
            key = ("generate", context, json.dumps(gen_kwargs, sort_keys=True, default=str))
            if key not in cache:
                kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
                budget = kwargs.pop("max_gen_toks")
                if kwargs.get("do_sample"):
                    log.warning("HookedLM decodes greedily; ignoring do_sample=True")
                if budget >= self.max_length:
                    raise ValueError(f"max_gen_toks={budget} leaves no room in {self.max_length}")
                ctx = self.tok_encode(context)[-(self.max_length - budget) :]
                tokens = self._greedy(ctx, budget, until)
                cache[key] = postprocess_generated_text(self.tok_decode(tokens), until, None)
            out.append(cache[key])
            self.cache_hook.add_partial("generate_until", req.args, cache[key])
        return out

    def _greedy(self, context: list[int], budget: int, until: list[str]) -> list[int]:
        model, device = self.model, self.model.cfg.device
        kv = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
        tokens = torch.tensor([context or [self.prefix_token_id]], device=device)
        generated: list[int] = []
        with torch.inference_mode(), self.intervention.apply(model):
            for _ in range(budget):
                logits = model(tokens, past_kv_cache=kv, attention_mask=torch.ones_like(tokens))
                nxt = int(logits[0, -1].argmax())
                if nxt == self.eot_token_id:
                    break
                generated.append(nxt)
                text = self.tok_decode(generated)
                if any(stop and stop in text for stop in until):
                    break
                tokens = torch.tensor([[nxt]], device=device)
        return generated


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's own command line with the ``workbench`` model registered (the ``lm_eval``
    script cannot import it by itself)::

        python -m workbench.lm_eval_adapter run --model workbench \
            --model_args model=pythia-160m,blocks=3 --tasks lambada_openai --batch_size 16
    """
    import sys

    from lm_eval.__main__ import cli_evaluate

    from workbench.task_data import cli_fewshot, lm_eval_datasets

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    with lm_eval_datasets(cli_fewshot(sys.argv[1:])):  # offline: lm-eval's tasks on local copies
        cli_evaluate()


__all__ = ["CLEAN", "HookedLM", "main"]

if __name__ == "__main__":
    # register the importable module's class, not a second copy living in __main__
    from workbench.lm_eval_adapter import main as _main

    _main()
else:
    register_model("workbench", "hooked")(HookedLM)
