"""benchmarks/RESULTS.md is rendered from the measured RESULTS.json: every benchmark there gets its
rows, with ratio, reference, target and whether it was met."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = {  # a line of the summary table each benchmark must produce
    "training": "Training throughput: useful tokens/s",
    "generation": "Generation: HumanEval n=20",
    "execution": "Execution: HumanEval programs/s",
    "estimate": "Memory: `codepeft estimate` within 15%",
    "trl": "Training vs TRL SFTTrainer: useful tokens/s (LoRA, SmolLM2-135M",
    "generation-smollm2": "Generation on SmolLM2-135M, HumanEval greedy",
    "memory-smollm2": "Memory on SmolLM2-135M: `codepeft estimate` within 10%",
}


def test_results_md_renders_every_measured_benchmark(tmp_path):
    measured = json.loads((ROOT / "benchmarks" / "RESULTS.json").read_text())
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--render", "benchmarks/RESULTS.json", "--results", str(out),
         "--notes", str(tmp_path / "none.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for name, row in ROWS.items():
        assert name in measured, f"RESULTS.json lacks {name}: run benchmarks/run_all.py"
        line = next((x for x in text.splitlines() if x.startswith(f"| {row}")), None)
        assert line is not None, row
        assert line.rstrip().rstrip("|").split("|")[-1].strip().split()[0].rstrip(",") in ("yes", "**no**"), line
    assert "## Training against TRL's SFTTrainer" in text and "MFU on SmolLM2-135M" in text
