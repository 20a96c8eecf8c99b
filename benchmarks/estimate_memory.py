"""`codepeft estimate` against measured peak training memory on tiny models of the real architectures.

For each architecture x method, a fresh process builds the model (width 256, 4 layers, vocabulary
of the offline tokenizer), applies the method, and runs three AdamW training steps on a fixed
batch; peak RSS is sampled every 5 ms and the RSS before the model existed is subtracted. glibc's
mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_) so freed tensors go back to the system and RSS
follows live memory instead of the allocator's high-water mark. The estimate is made for the same
model, method, dtype (fp32), batch and sequence length with no runtime overhead (it is subtracted).

    .venv/bin/python benchmarks/estimate_memory.py                 # all, ~3 minutes on 2 cores
    .venv/bin/python benchmarks/estimate_memory.py --archs llama --methods lora --out est.json
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

ARCHS = ["gpt_bigcode", "llama", "qwen2", "codegen", "t5"]
METHODS = ["full", "lora", "ia3", "ptuning", "adapter_houlsby"]
SEQ, BATCH, WIDTH, LAYERS = 256, 8, 256, 4

MEASURE = (
    PEAK_SAMPLER
    + r"""
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
from codepeft.methods import ApplyContext, get_method
from codepeft.training.runner import training_kernels
path, method, seq, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = AutoConfig.from_pretrained(path)
torch.manual_seed(0)
ids = torch.randint(5, config.vocab_size, (batch, seq))
start = start_sampling()
auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
try:
    model = auto.from_config(config, attn_implementation="sdpa")
except ValueError:  # no SDPA for this architecture (CodeGen, T5): eager attention
    model = auto.from_config(config, attn_implementation="eager")
print(json.dumps({"attention": model.config._attn_implementation}), flush=True)
m = get_method(method)
model = m.apply(model, m.options({}), ApplyContext())
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
kwargs = dict(input_ids=ids, labels=ids)
# as codepeft train runs on CPU: its dropout masks and LoRA kernel (which the estimate traces)
with training_kernels(model, varlen=False):
    for _ in range(3):
        loss = model(**kwargs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
time.sleep(0.05)
print(json.dumps({"peak_bytes": peak[0] - start}))
"""
)


def build(arch: str, root: Path) -> Path:
    from codepeft.corpus import stdlib_files
    from codepeft.models.tiny import build_tiny_model
    from codepeft.models.tokenizer import train_bpe_tokenizer

    tok = train_bpe_tokenizer((f.read() for f in stdlib_files()[:60]), vocab_size=4096)
    return build_tiny_model(arch, root / arch, tok, seed=0, width=WIDTH, layers=LAYERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from codepeft.estimate import estimate

    rows = []
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            path = build(arch, Path(tmp))
            for method in args.methods.split(","):
                out = subprocess.run(
                    [sys.executable, "-c", MEASURE, str(path), method, str(SEQ), str(BATCH)],
                    capture_output=True, text=True, env=env, check=True,
                )  # fmt: skip
                lines = [json.loads(x) for x in out.stdout.strip().splitlines() if x.startswith("{")]
                measured = lines[-1]["peak_bytes"]
                attention = "sdpa" if lines[0]["attention"] == "sdpa" else "eager"
                est = estimate(str(path), method, seq_len=SEQ, batch=BATCH, dtype="fp32", device="cpu", loss_chunk=0,
                               attention=attention)  # fmt: skip
                rows.append(
                    {
                        "arch": arch,
                        "method": method,
                        "measured_mb": round(measured / 2**20, 1),
                        "estimated_mb": round(est.peak_bytes / 2**20, 1),
                        "error_%": round(100 * (est.peak_bytes - measured) / measured, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    errors = [abs(r["error_%"]) for r in rows]
    print("\n| arch | method | measured MB | estimated MB | error % |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['method']} | {r['measured_mb']} | {r['estimated_mb']} | {r['error_%']:+} |")
    within = sum(e <= 15 for e in errors)
    print(f"\n{within}/{len(rows)} within 15%; mean absolute error {sum(errors) / len(errors):.1f}%")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
