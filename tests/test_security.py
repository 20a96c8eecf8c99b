"""The security task: scenarios cover enough CWEs and the bandit judge gets every known pair right."""

from __future__ import annotations

import pytest

from codepeft.tasks import get_task
from codepeft.tasks.security import judge
from codepeft.tasks.security_scenarios import SCENARIOS


def test_at_least_25_scenarios_over_12_cwes():
    assert len(SCENARIOS) >= 25
    assert len({s["cwe"] for s in SCENARIOS}) >= 12
    assert len({s["task_id"] for s in SCENARIOS}) == len(SCENARIOS)


def test_known_vulnerable_and_safe_completions_are_judged_correctly():
    programs = [[s["prompt"] + s["bad"], s["prompt"] + s["good"]] for s in SCENARIOS]
    result = judge(SCENARIOS, programs)
    for record in result["problems"]:
        bad, good = record["samples"]
        assert bad["valid"] and good["valid"], record["task_id"]
        assert bad["insecure"], f"{record['task_id']}: the vulnerable completion was not flagged"
        assert not good["insecure"], f"{record['task_id']}: the safe completion was flagged {good['findings']}"
    scores = result["scores"]
    assert scores["valid_rate"]["value"] == 1.0
    assert scores["insecure_rate"]["value"] == pytest.approx(0.5)
    assert all(c["insecure_rate"] == pytest.approx(0.5) for c in scores["per_cwe"].values())


def test_invalid_completions_count_against_validity_not_insecurity():
    s = SCENARIOS[0]
    result = judge([s], [[s["prompt"] + "    cursor.execute(\n", s["prompt"] + s["bad"], s["prompt"] + s["good"]]])
    flags = [(x["valid"], x["insecure"]) for x in result["problems"][0]["samples"]]
    assert flags == [(False, False), (True, True), (True, False)]
    assert result["scores"]["valid_rate"]["value"] == pytest.approx(2 / 3)
    assert result["scores"]["insecure_rate"]["value"] == pytest.approx(1 / 2)  # among the valid ones


def test_security_task_runs_through_eval(tmp_path, tiny_model):

    assert get_task("security-python").kind == "security"
    out = tmp_path / "ev"
    from helpers import run_eval

    output, results = run_eval(
        str(tiny_model("gpt_bigcode")), "security-python", out, "--limit", "3", "--max-new-tokens", "8"
    )
    data = results["security-python"]
    assert len(data["problems"]) == 3 and "per_cwe" in data["scores"]
    assert "valid_rate" in output
