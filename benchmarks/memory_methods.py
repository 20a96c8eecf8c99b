"""Peak training memory of full fine-tuning, LoRA and QLoRA (4-bit and 8-bit) on one model, each
measured in a fresh process and set beside `codepeft estimate` for the same run.

The model is a Llama-architecture model of about 100M parameters (width 1024, 8 layers), large
enough that weights and optimizer state, not the runtime, decide the peak. Three AdamW steps on
a batch of 4 x 256 tokens, fp32 compute; peak RSS above the RSS before loading (glibc's mmap
threshold fixed so freed tensors leave RSS). On CPU; on a GPU, CUDA's max-allocated memory is
the yardstick (not measured here).

    .venv/bin/python benchmarks/memory_methods.py --out memory.json
    .venv/bin/python benchmarks/memory_methods.py --model smollm2-135m --out memory_smollm2.json

`--model smollm2-135m` measures the real pretrained model (135M parameters, vocabulary 49,152) with
every method the estimator is held to on it: full, LoRA, QLoRA (4-bit), (IA)3, P-tuning, prompt
and prefix tuning, and the three bottleneck adapters, at batch 2 x 256.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEAK_SAMPLER  # noqa: E402

WIDTH, LAYERS, SEQ, BATCH = 1024, 8, 256, 4
METHODS = [("full", None), ("lora", None), ("qlora", "4bit"), ("qlora", "8bit")]
REAL_BATCH = 2
REAL_METHODS = [
    ("full", None), ("lora", None), ("qlora", "4bit"), ("ia3", None), ("ptuning", None), ("prompt", None),
    ("prefix", None), ("adapter_houlsby", None), ("adapter_pfeiffer", None), ("adapter_parallel", None),
]  # fmt: skip

MEASURE = (
    PEAK_SAMPLER
    + r"""
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from codepeft.methods import ApplyContext, get_method
from codepeft.training.runner import training_kernels
path, method, quant, seq, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.manual_seed(0)
start = start_sampling()
kwargs = {"dtype": torch.float32}
if quant == "4bit":
    kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    kwargs["device_map"] = {"": "cpu"}
elif quant == "8bit":
    kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    kwargs["device_map"] = {"": "cpu"}
model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
ids = torch.randint(5, model.config.vocab_size, (batch, seq))
m = get_method(method)
options = m.options({"bits": 4 if quant == "4bit" else 8} if method == "qlora" else {})
model = m.apply(model, options, ApplyContext(quantized=quant != "none", tokenizer_path=path))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
# as codepeft train runs on CPU: its dropout masks and LoRA kernel (which the estimate traces)
with training_kernels(model, varlen=False):
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
time.sleep(0.05)
print(json.dumps({"peak_bytes": peak[0] - start}))
"""
)


def build(root: Path) -> Path:
    from codepeft.corpus import stdlib_files
    from codepeft.models.tiny import build_tiny_model
    from codepeft.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer((f.read() for f in stdlib_files()[:60]), vocab_size=4096)
    return build_tiny_model("llama", root / "llama", tok, seed=0, width=WIDTH, layers=LAYERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a built-in model (smollm2-135m) instead of the 100M Llama built here")
    parser.add_argument("--methods", help="comma-separated subset, e.g. lora,qlora")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from codepeft.estimate import estimate
    from codepeft.models.builtin import resolve_name

    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    methods, batch = (REAL_METHODS, REAL_BATCH) if args.model else (METHODS, BATCH)
    if args.methods:
        methods = [(m, q) for m, q in methods if m in args.methods.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = resolve_name(args.model) if args.model else build(Path(tmp))
        for method, quant in methods:
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, str(path), method, quant or "none", str(SEQ), str(batch)],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(f"{method} {quant}: {out.stderr[-2000:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
            options = {"bits": 4 if quant == "4bit" else 8} if method == "qlora" else None
            est = estimate(str(path), method, options, seq_len=SEQ, batch=batch, dtype="fp32", quantization=quant,
                           device="cpu", loss_chunk=0)  # fmt: skip
            rows.append(
                {
                    "model": args.model or f"llama {WIDTH}x{LAYERS}",
                    "method": method + (f" ({quant})" if quant else ""),
                    "params_m": round(est.total_params / 1e6, 1),
                    "trainable_m": round(est.trainable_params / 1e6, 2),
                    "measured_mb": round(measured / 2**20, 1),
                    "estimated_mb": round(est.peak_bytes / 2**20, 1),
                    "error_%": round(100 * (est.peak_bytes - measured) / measured, 1),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    full = rows[0]["measured_mb"]
    for r in rows:
        r["vs_full"] = round(r["measured_mb"] / full, 2)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
