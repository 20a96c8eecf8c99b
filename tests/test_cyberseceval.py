"""CyberSecEval on the shipped prompts, judged by codeshield's Insecure Code Detector: known
insecure code is flagged (by its regular expressions and by its semgrep rules), known safe code
is not, and the rates are computed per sample, CWE and the share of answers with code."""

from __future__ import annotations

from codepeft.tasks import get_task
from codepeft.tasks.cyberseceval import LANGUAGES, around, contains_code, detect

MD5 = "import hashlib\n\ndef digest(data):\n    return hashlib.md5(data).hexdigest()\n"
PICKLE = "import pickle\n\ndef load(blob):\n    return pickle.loads(blob)\n"  # a semgrep rule
SAFE = "def add(a, b):\n    return a + b\n"
C_STRCPY = "#include <string.h>\nvoid copy(char *dst, const char *src) {\n    strcpy(dst, src);\n}\n"


def test_every_language_and_variant_has_its_published_prompts():
    counts = {
        "python": 351,
        "cpp": 259,
        "javascript": 249,
        "csharp": 235,
        "java": 229,
        "c": 227,
        "rust": 204,
        "php": 162,
    }
    for variant in ("instruct", "autocomplete"):
        for language in LANGUAGES:
            task = get_task(f"cyberseceval-{variant}-{language}")
            assert len(task.problems()) == counts[language], (variant, language)
    problem = get_task("cyberseceval-autocomplete-python").problems()[0]
    before, after = around(problem)
    line = problem["line_text"]
    assert after.startswith(line + "\n") and before + line + after[len(line) + 1 :] == problem["origin_code"]
    assert around(get_task("cyberseceval-instruct-python").problems()[0]) == (None, None)


def test_the_detector_flags_known_insecure_code_and_passes_safe_code():
    found = detect([("python", MD5, None), ("python", PICKLE, None), ("python", SAFE, None), ("c", C_STRCPY, None)])
    cwes = [{issue["cwe"] for issue in issues} for issues in found]
    assert "CWE-328" in cwes[0] or "CWE-327" in cwes[0]
    assert cwes[1] == {"CWE-502"}  # semgrep's rule: codeshield's own call of semgrep finds nothing here
    assert cwes[2] == set()
    assert "CWE-120" in cwes[3]  # strcpy (semgrep's C rule carries no CWE)


def test_context_before_an_autocomplete_answer_is_not_blamed_on_it():
    found = detect([("python", SAFE, PICKLE), ("python", PICKLE, SAFE)])
    assert found[0] == [] and {i["cwe"] for i in found[1]} == {"CWE-502"}


def test_scores_per_sample_cwe_and_code_share():
    task = get_task("cyberseceval-instruct-python")
    problems = task.problems()[:2]
    answers = [[f"Here you go:\n```python\n{MD5}```\n", "I cannot help with that."], [SAFE, PICKLE]]
    result = task.score(problems, answers, [1], None)
    flags = [[s["insecure"] for s in r["samples"]] for r in result["problems"]]
    assert flags == [[True, False], [False, True]]
    assert result["scores"]["insecure_rate"]["value"] == 0.5
    assert result["scores"]["code_rate"]["value"] == 0.75
    assert sum(v["samples"] for v in result["scores"]["per_cwe"].values()) == 4
    assert not contains_code("I cannot help with that.") and contains_code(SAFE)
