"""Generation backends.

`HFBackend` batches prompts with left padding (decoder-only) and the KV cache, samples `n`
completions per prompt, and stops each sequence at its own stop string (transformers'
StopStringCriteria marks a finished row done; the batch ends when every row is done, so
prompts are sorted by length to keep batches even). It samples with a random stream per row
(codepeft.generation.sampling), so a prompt's samples do not depend on its batch, and runs rows
of several LoRA adapters of one base in one batch (codepeft.generation.together).
`VLLMBackend` serves base models and LoRA adapters where a GPU and the `vllm` package are present.
"""

from __future__ import annotations

import contextlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteriaList, StopStringCriteria

from codepeft.allocator import retain_freed_memory
from codepeft.errors import CodepeftError
from codepeft.families import MethodFamily
from codepeft.generation import decode_attention, packed_linear
from codepeft.generation.kv_cache import growing_cache
from codepeft.generation.lora_inference import lean_lora
from codepeft.generation.sampling import SeededSampling, row_seed
from codepeft.models.loading import context_limit


@dataclass
class GenerationSettings:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 8
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def truncate_at_stop(text: str, stop: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


class GenerationBackend(ABC):
    """What a task may ask of a generation backend. `generate` is the one thing each must do;
    the rest have defaults for backends that cannot answer (vLLM keeps no model in memory)."""

    name: str
    truncated_prompts: int = 0  # prompts cut on the left to fit the context window, since reset

    @abstractmethod
    def generate(self, prompts: list[str], settings: GenerationSettings, progress: bool = True) -> list[list[str]]:
        """`settings.n` completions for every prompt, each cut at the first of `settings.stop`."""

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        """Prompt tokens that fit beside `max_new_tokens` new ones (None: no known limit)."""
        return None

    def model_in_memory(self):
        """The model itself, for tasks that score it without generating (held-out loss)."""
        raise CodepeftError(f"the {self.name} backend keeps no model in memory; use --backend hf for loss tasks")


class HFBackend(GenerationBackend):
    name = "hf"

    def model_in_memory(self):
        return self.model

    def __init__(self, model, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        config = getattr(model, "config", None)
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        if getattr(config, "use_cache", None) is False:
            config.use_cache = True  # training turns it off; prefix tuning cannot generate without it
        self.context = context_limit(config)
        peft_config = getattr(model, "peft_config", {}).get("default")
        self.virtual_tokens = getattr(peft_config, "num_virtual_tokens", 0) or 0
        self.truncated_prompts = 0  # prompts cut on the left to fit the context window
        self.stop_criteria: dict[tuple[str, ...], StopStringCriteria] = {}
        self.packed: packed_linear.PackedLinears | None = None
        if next(model.parameters()).device.type == "cpu":
            retain_freed_memory()  # vocabulary-wide tensors every step (codepeft.allocator)
            if packed_linear.available() and packed_linear.fits(model):
                self.packed = packed_linear.PackedLinears()

    @property
    def compacting(self) -> bool:
        # Virtual-token methods rewrite the inputs inside peft's generate; encoder-decoders keep a
        # cross-attention cache: both generate in one call (finished rows then ride along as padding).
        return not self.encoder_decoder and self.virtual_tokens == 0

    def _generate_compacting(self, enc: dict, kwargs: dict, stop: list[str], adapters: list[str] | None) -> list[str]:
        """Generate in chunks of CHUNK tokens and drop finished rows (and their KV cache) between
        chunks, so a finished sample stops costing compute."""
        tok = self.tokenizer
        n = kwargs.pop("num_return_sequences")
        total = kwargs.pop("max_new_tokens")
        sampler = next(iter(kwargs.get("logits_processor") or []), None)
        if n > 1 and enc["input_ids"].shape[1] > 1:
            cache = self._shared_prefill(enc, n, adapters)
        else:
            cache = growing_cache(self.model)
        ids = enc["input_ids"].repeat_interleave(n, dim=0)
        mask = enc["attention_mask"].repeat_interleave(n, dim=0)
        row_adapters = [a for a in adapters for _ in range(n)] if adapters else None
        start = ids.shape[1]
        rows = list(range(ids.shape[0]))
        seeds = list(sampler.seeds) if sampler is not None else []
        texts: list[str] = [""] * len(rows)
        produced = 0
        while rows and produced < total:
            step = min(self.CHUNK, total - produced)
            live = len(rows)
            # copies of the first row fill a small batch up to MIN_ROWS on a CPU (discarded after)
            small = 1 < live < self.MIN_ROWS and ids.device.type == "cpu"
            run = rows + rows[:1] * (self.MIN_ROWS - live) if small else rows
            if len(run) > live:
                index = torch.tensor(list(range(live)) + [0] * (len(run) - live), device=ids.device)
                ids, mask = ids[index], mask[index]
                if cache is not None and cache.get_seq_length() > 0:
                    cache.batch_select_indices(index)
            if sampler is not None:
                sampler.seeds = [seeds[r] for r in run]
            if row_adapters is not None:
                kwargs["adapter_names"] = [row_adapters[r] for r in run]
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                past_key_values=cache,
                max_new_tokens=step,
                return_dict_in_generate=True,
                **kwargs,
            )
            seqs, cache = out.sequences[:live], out.past_key_values
            mask = mask[:live]
            if len(run) > live:
                cache.batch_select_indices(torch.arange(live, device=seqs.device))
            produced += step
            new = seqs[:, start:]
            decoded = tok.batch_decode(new, skip_special_tokens=True)
            keep = []
            for i, (row, text) in enumerate(zip(rows, decoded, strict=True)):
                texts[row] = text
                ended = (new[i] == tok.eos_token_id).any().item() or new.shape[1] < produced
                if not ended and not any(s in text for s in stop):
                    keep.append(i)
            mask = torch.cat([mask, torch.ones_like(seqs[:, mask.shape[1] :])], dim=1)
            if len(keep) < len(rows) and keep:
                index = torch.tensor(keep, device=seqs.device)
                cache.batch_select_indices(index)
                seqs, mask = seqs[index], mask[index]
            rows = [rows[i] for i in keep]
            ids = seqs
        return texts

    CHUNK = 32  # tokens generated between two compactions of the batch
    # A CPU batch of 2 or 3 rows is run as 4: matrix products of 2 or 3 rows run as that many
    # one-row products (a SmolLM2-135M decode step: 63 ms for 1 row, 104 for 2, 127 for 3, 92 for
    # 4, 95 for 8, measured on two cores).
    MIN_ROWS = 4

    def stop_criterion(self, stop: tuple[str, ...]) -> StopStringCriteria:
        """transformers' stop-string criterion, built once per stop list. `generate(stop_strings=)`
        builds a new one per call, and its own cache misses (its key is the vocabulary in the
        tokenizer's dict order, which changes between calls): 2 s a call for a 49k vocabulary."""
        if stop not in self.stop_criteria:
            self.stop_criteria[stop] = StopStringCriteria(self.tokenizer, list(stop))
        return self.stop_criteria[stop]

    def _shared_prefill(self, enc: dict, n: int, adapters: list[str] | None):
        """The KV cache of every prompt but its last token, computed once per prompt and repeated
        for its n samples (transformers' `num_return_sequences` repeats the prompt before the
        forward pass, so it computes a HumanEval prompt's cache 20 times over). `generate` then
        starts from the last prompt token, as it does when a chunk continues a cache."""
        ids, mask = enc["input_ids"][:, :-1], enc["attention_mask"][:, :-1]
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate numbers them
        extra = {"adapter_names": adapters} if adapters is not None else {}
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=growing_cache(self.model),
            use_cache=True,
            logits_to_keep=1,
            **extra,
        )
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        return cache

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        if self.context is None or self.encoder_decoder:
            return None
        budget = self.context - max_new_tokens - self.virtual_tokens
        if budget < 8:
            raise CodepeftError(
                f"max_new_tokens={max_new_tokens} leaves no room for a prompt in this model's {self.context}-token "
                "context; lower --max-new-tokens"
            )
        return budget

    def batches(self, prompts: list[str], settings: GenerationSettings) -> list[list[int]]:
        """Indices of the prompts each batch generates for: sorted by length, so a batch's rows end
        close together; the n samples of one prompt share a batch of batch_size // n prompts."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_batch = max(1, settings.batch_size // settings.n) if not settings.greedy else settings.batch_size
        return [order[i : i + per_batch] for i in range(0, len(order), per_batch)]

    def truncated(self, prompts: list[str], settings: GenerationSettings) -> int:
        """How many of these prompts are cut on the left to fit the context beside the answer."""
        budget = self.prompt_budget(settings.max_new_tokens)
        if budget is None:
            return 0
        return sum(len(ids) > budget for ids in self.tokenizer(prompts, add_special_tokens=True)["input_ids"])

    def generate(self, prompts: list[str], settings: GenerationSettings, progress: bool = True) -> list[list[str]]:
        """n completions (prompt text excluded, cut at the first stop string) for every prompt."""
        results: list[list[str]] = [[] for _ in prompts]
        batches = self.batches(prompts, settings)
        for idx in tqdm(batches, desc="generating", unit="batch", disable=not progress):
            texts_in = [prompts[i] for i in idx]
            self.truncated_prompts += self.truncated(texts_in, settings)
            for i, samples in zip(idx, self.generate_batch(texts_in, settings), strict=True):
                results[i] = samples
        return results

    def generate_batch(
        self,
        texts_in: list[str],
        settings: GenerationSettings,
        adapters: list[str] | None = None,
        seeds: list[int] | None = None,
    ) -> list[list[str]]:
        """n completions for each prompt of one batch. `adapters` names the peft adapter of each
        prompt ("__base__": none), for peft's mixed-batch inference (LoRA adapters of one base);
        `seeds` the evaluation seed of each prompt (default: `settings.seed`)."""
        tok = self.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        budget = self.prompt_budget(settings.max_new_tokens)
        device = next(self.model.parameters()).device
        tok.truncation_side = "left"  # keep the end of the prompt: that is what gets continued
        enc = tok(
            texts_in,
            return_tensors="pt",
            padding=True,
            add_special_tokens=True,
            truncation=budget is not None,
            max_length=budget,
        )
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        per_prompt = 1 if settings.greedy else settings.n
        kwargs = dict(
            max_new_tokens=settings.max_new_tokens,
            num_return_sequences=per_prompt,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        if not settings.greedy:  # each row its own random stream (codepeft.generation.sampling)
            seeds = seeds or [settings.seed] * len(texts_in)
            rows = [
                row_seed(seed, text, s) for seed, text in zip(seeds, texts_in, strict=True) for s in range(per_prompt)
            ]
            kwargs["logits_processor"] = LogitsProcessorList(
                [SeededSampling(settings.temperature, settings.top_p, rows)]
            )
        if settings.stop:
            kwargs["stopping_criteria"] = StoppingCriteriaList([self.stop_criterion(tuple(settings.stop))])
        packed = self.packed.enabled(self.model) if self.packed else contextlib.nullcontext()
        with torch.no_grad(), packed, lean_lora(self.model), decode_attention.enabled(self.model):
            if self.compacting:
                texts = self._generate_compacting(enc, kwargs, settings.stop, adapters)
            else:
                if adapters is not None:
                    raise CodepeftError("mixed-adapter batches need a model that generates without virtual tokens")
                # rows expanded here: transformers' greedy search takes no num_return_sequences
                kwargs["num_return_sequences"] = 1
                enc = {k: v.repeat_interleave(per_prompt, dim=0) for k, v in enc.items()}
                out = self.model.generate(**enc, **kwargs)
                new = out if self.encoder_decoder else out[:, enc["input_ids"].shape[1] :]
                texts = tok.batch_decode(new, skip_special_tokens=True)
        results = []
        for j in range(len(texts_in)):
            samples = texts[j * per_prompt : (j + 1) * per_prompt]
            if settings.greedy:
                samples = samples * settings.n  # greedy samples are identical: decode once
            results.append([truncate_at_stop(s, settings.stop) for s in samples])
        return results


class VLLMBackend(GenerationBackend):  # pragma: no cover - needs a GPU and the optional vllm package
    name = "vllm"

    def __init__(self, base_model: str, adapter_dir: str | None = None, dtype: str = "auto"):
        from vllm import LLM

        self.llm = LLM(model=base_model, dtype=dtype, enable_lora=adapter_dir is not None)
        self.adapter_dir = adapter_dir
        self.tokenizer = self.llm.get_tokenizer()

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return self.llm.llm_engine.model_config.max_model_len - max_new_tokens

    def generate(self, prompts, settings, progress=True):
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        params = SamplingParams(
            n=settings.n,
            temperature=max(settings.temperature, 0.0),
            top_p=settings.top_p if not settings.greedy else 1.0,
            max_tokens=settings.max_new_tokens,
            stop=settings.stop or None,
            seed=settings.seed,
        )
        lora = LoRARequest("adapter", 1, self.adapter_dir) if self.adapter_dir else None
        outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=progress)
        return [[truncate_at_stop(c.text, settings.stop) for c in o.outputs] for o in outputs]


def vllm_usable() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def make_backend(
    kind: str,
    model,
    tokenizer,
    base_model: str | None = None,
    adapter_dir: str | None = None,
    method_family: MethodFamily = MethodFamily.ZERO_SHOT,
) -> GenerationBackend:
    """`auto` picks vLLM for base models and LoRA adapters when it can run, else Hugging Face."""
    if kind not in ("auto", "hf", "vllm"):
        raise CodepeftError(f"backend must be auto, hf or vllm, not {kind!r}")
    vllm_fits = method_family in (MethodFamily.ZERO_SHOT, MethodFamily.FULL, MethodFamily.LORA)
    if kind == "vllm":
        if not vllm_usable():
            raise CodepeftError("the vllm backend needs a CUDA GPU and `pip install vllm`; use --backend hf")
        if not vllm_fits:
            raise CodepeftError(f"vLLM cannot serve {method_family} methods; use --backend hf (or merge first)")
    if kind == "vllm" or (kind == "auto" and vllm_usable() and vllm_fits and base_model):
        return VLLMBackend(base_model, adapter_dir)
    return HFBackend(model, tokenizer)
