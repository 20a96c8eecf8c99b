"""Tiny, randomly initialised models of the real code-model architectures, for tests.

They are saved to a directory and loaded back through `from_pretrained`, so the tests
exercise the same loading code a user runs on a hub model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedTokenizerFast

from codepeft.errors import CodepeftError

TINY_ARCHITECTURES = ("gpt_bigcode", "llama", "qwen2", "codegen", "t5", "starcoder2", "gpt2", "gpt_neox")

# A ChatML template, attached to the tiny Qwen2 tokenizer so the chat prompt format is tested.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_config(arch: str, vocab_size: int, eos_id: int, pad_id: int, width: int = 64, layers: int = 2):
    heads = 4
    common = dict(vocab_size=vocab_size, eos_token_id=eos_id, bos_token_id=eos_id, pad_token_id=pad_id)
    llama_like = dict(
        hidden_size=width,
        intermediate_size=width * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    kwargs = {
        "gpt_bigcode": dict(n_embd=width, n_layer=layers, n_head=heads, n_positions=512, multi_query=True),
        "gpt2": dict(n_embd=width, n_layer=layers, n_head=heads, n_positions=512),
        "llama": llama_like,
        "qwen2": llama_like,
        "starcoder2": {**llama_like, "use_bias": True},
        "codegen": dict(n_embd=width, n_layer=layers, n_head=heads, rotary_dim=8, n_positions=512, n_ctx=512),
        "gpt_neox": dict(
            hidden_size=width,
            intermediate_size=width * 2,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=512,
        ),
        "t5": dict(
            d_model=width,
            d_ff=width * 2,
            d_kv=width // heads,
            num_layers=layers,
            num_decoder_layers=layers,
            num_heads=heads,
            decoder_start_token_id=pad_id,
            tie_word_embeddings=False,
        ),
    }
    if arch not in kwargs:
        raise CodepeftError(f"no tiny config for architecture {arch!r}; known: {', '.join(TINY_ARCHITECTURES)}")
    return AutoConfig.for_model(arch, **common, **kwargs[arch])


def build_tiny_model(
    arch: str,
    out_dir: str | Path,
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    width: int = 64,
    layers: int = 2,
) -> Path:
    """Build, randomly initialise (from `seed`) and save a tiny `arch` model with `tokenizer`."""
    config = tiny_config(
        arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, width=width, layers=layers
    )
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32)
    out = Path(out_dir)
    model.save_pretrained(out)
    if arch == "qwen2":
        tokenizer = _with_chat_template(tokenizer)
    tokenizer.save_pretrained(out)
    return out


def _with_chat_template(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = CHATML_TEMPLATE
    return tok
