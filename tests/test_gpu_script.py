"""benchmarks/gpu.sh without a GPU: its CPU dry run runs every check's code on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_gpu_script_dry_run_measures_every_method_and_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Training\n\nkept\n")
    env = {**os.environ, "RESULTS_MD": str(results), "OUT": str(tmp_path / "gpu.json")}
    for _ in range(2):  # a second run replaces the section instead of adding another
        done = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "gpu.json").read_text())
    from gpu_checks import METHODS

    assert [r["method"] for r in data["training"]] == METHODS
    for row in data["training"]:
        assert "error" not in row, row
        assert row["measured_mb"] > 0 and row["estimated_mb"] > 0 and row["tokens_per_s"] > 0
    assert data["generation"]["hf_tokens_per_s"] > 0 and "not run" in data["generation"]["vllm"]
    text = results.read_text()
    assert text.count("## GPU checks") == 1 and "kept" in text
    assert "| adapter_parallel |" in text and "--dry-run" in text


def test_gpu_section_replaces_only_itself(tmp_path):
    from gpu_checks import MARK, write_section

    md = tmp_path / "RESULTS.md"
    md.write_text(f"# R\n\n## A\n\na\n\n{MARK}\n## GPU checks\n\nold\n\n## B\n\nb\n")
    write_section(md, f"{MARK}\n## GPU checks\n\nnew\n")
    text = md.read_text()
    assert "old" not in text and "new" in text and "## A\n\na" in text and "## B\n\nb" in text


def test_gpu_script_refuses_without_a_gpu():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, "benchmarks/gpu_checks.py"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and "no CUDA GPU" in done.stderr
