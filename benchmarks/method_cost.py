"""Cost of each tuning method on one model, as ratios to full fine-tuning measured in the same run.

Each method trains in its own `codepeft train` process (so peak RSS is not inherited from an
earlier method) on the same data and steps; the table gives trainable parameters, peak memory
and training tokens/s, each also relative to full fine-tuning.

    .venv/bin/python benchmarks/method_cost.py                      # offline default model
    .venv/bin/python benchmarks/method_cost.py --model PATH --steps 30 --out cost.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = [
    "full",
    "lora",
    "qlora",
    "ia3",
    "prompt",
    "prefix",
    "ptuning",
    "adapter_houlsby",
    "adapter_pfeiffer",
    "adapter_parallel",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    codepeft = Path(sys.executable).with_name("codepeft")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            run_dir = Path(tmp) / method
            cmd = [
                str(codepeft),
                "train",
                str(root / "configs/quickstart.yaml"),
                "--set",
                f"model.name_or_path={args.model}",
                "--set",
                f"method.name={method}",
                "--set",
                f"train.max_steps={args.steps}",
                "--set",
                f"train.eval_steps={args.steps + 1}",
                "--set",
                f"train.save_steps={args.steps + 1}",
                "--output-dir",
                str(run_dir),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                rows.append({"method": method, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            cost = json.loads((run_dir / "cost.json").read_text())
            rows.append({"method": method, **cost})
    base = next((r for r in rows if r["method"] == "full" and "error" not in r), None)
    print(f"{'method':18} {'trainable':>12} {'ratio':>8} {'peak GB':>8} {'x full':>7} {'tok/s':>8} {'x full':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['method']:18} failed: {r['error']}")
            continue
        mem = r["peak_memory_bytes"] / base["peak_memory_bytes"] if base else float("nan")
        speed = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
        r.update(memory_vs_full=mem, speed_vs_full=speed)
        print(
            f"{r['method']:18} {r['trainable_params']:>12,} {100 * r['trainable_ratio']:>7.3f}% "
            f"{r['peak_memory_gb']:>8.3f} {mem:>7.2f} {r['tokens_per_s']:>8.0f} {speed:>7.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
