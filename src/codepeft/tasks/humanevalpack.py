"""HumanEvalPack (OctoPack): synthesize and fix, in Python, Java, JavaScript, C++, Go and Rust, on the
released data shipped with codepeft (`data/shipped/humanevalpack`), scored in the sandbox.

- `humanevalsynthesize-{lang}`: write the function from its docstring (the released `instruction`).
- `humanevalfix-{lang}`: fix the hand-written bug (`buggy_solution`); the tests are shown as the
  source of truth, as in the OctoPack paper's HumanEvalFixTests and the Astraios study.
- `humanevalfixdocs-{lang}`: the same bug with the docstring shown instead of the tests.

Prompts follow the BigCode harness: the code the answer continues is the function's signature
(with its docstring for synthesize and fixdocs), and for fix the context (buggy code and tests,
or docstring) comes before the instruction in the `instruct` format and after it in the others.
The completion is cut where the function closes (or closed where it stopped short) and the
released tests are appended. A local copy of the hub data in the same schema can replace the
shipped file (`--task-data NAME=FILE`).
"""

from __future__ import annotations

import re
from pathlib import Path

from codepeft.data.records import read_file
from codepeft.data.shipped import read_shipped
from codepeft.errors import CodepeftError
from codepeft.tasks.base import PYTHON_STOP, Prompt, Task, extract_code
from codepeft.tasks.humanevalexplain import ExplainStages, strip_code

# language code of the data -> (sandbox language, name in prompts, stop strings, braces open in the prefix)
LANGUAGES = {
    "python": ("python", "Python", PYTHON_STOP, 0),
    "java": ("java", "Java", ["\npublic class Main", "\nclass Main", "\n/**", "```"], 2),
    "js": ("javascript", "JavaScript", ["\n}\n", "```"], 1),
    "cpp": ("cpp", "C++", ["\n}\n", "\nint main", "```"], 1),
    "go": ("go", "Go", ["\n}\n", "\nfunc Test", "```"], 1),
    "rust": ("rust", "Rust", ["\n}\n", "\n#[cfg(test)]", "```"], 1),
}
MODES = ("synthesize", "fix", "fixdocs")  # and "explain" (PackExplain), for every language but Python
FIELDS = ("task_id", "prompt", "declaration", "canonical_solution", "buggy_solution", "test", "entry_point")


# a top-level helper function that may follow the solved one (Go's and Rust's references use them)
HELPER = {
    "go": re.compile(r"\s*func (?!main\b|Test)\w+\s*\("),
    "rust": re.compile(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub\s+)?(?:fn (?!main\b)|enum |struct |impl\b|trait )"),
}


def close_function(completion: str, open_braces: int, helper: re.Pattern | None = None) -> str:
    """The completion up to where the braces opened before it close, or closed for it if it
    stopped short (a model rarely stops exactly at the function's end); then each complete
    top-level function matching `helper` that follows."""
    if open_braces == 0:
        return completion
    depth = open_braces
    for i, char in enumerate(completion):
        depth += (char == "{") - (char == "}")
        if depth == 0:
            rest = completion[i + 1 :]
            if helper is not None and helper.match(rest) and "{" in rest:
                more = close_function(rest[rest.index("{") + 1 :], 1, helper)
                if more.endswith("}"):  # only a helper that closes
                    return completion[: i + 1] + rest[: rest.index("{") + 1] + more
            return completion[: i + 1]
    return completion + "\n" + "}\n" * depth


class HumanEvalPack(Task):
    def __init__(self, mode: str, language: str, data_files: str | None = None):
        if mode not in (*MODES, "explain") or language not in LANGUAGES:
            raise CodepeftError(f"no HumanEvalPack task {mode}-{language}")
        sandbox_language, self.language_name, stop, self.open_braces = LANGUAGES[language]
        shown = {
            "synthesize": "the docstring",
            "fix": "the buggy code and its tests",
            "fixdocs": "the buggy code",
            "explain": "its own description of the reference solution",
        }
        super().__init__(
            name=f"humaneval{mode}-{language}",
            description=f"HumanEvalPack {self.language_name} {mode}: given {shown[mode]}; pass@k in the sandbox",
            metrics=("pass@k",),
            source=f"HumanEvalPack {language} (164, MIT), shipped; or --task-data FILE",
            language=sandbox_language,
            stop=list(stop),
        )
        self.mode, self.data_language, self.data_files = mode, language, data_files

    def problems(self):
        if self.data_files:
            raw = read_file(Path(self.data_files))
        else:
            shipped = f"humanevalpack/{self.data_language}.jsonl.gz"
            raw = ((f"{shipped} line {i}", rec) for i, rec in enumerate(read_shipped(shipped), 1))
        problems = []
        for where, rec in raw:
            missing = [f for f in FIELDS if f not in rec]
            if missing:
                raise CodepeftError(f"{where}: missing HumanEvalPack field(s) {missing}")
            problems.append(dict(rec))
        return problems

    def answer_prefix(self, problem: dict) -> str:
        """The code the model continues: the signature, with the docstring where the mode shows it."""
        return problem["declaration"] if self.mode in ("fix", "explain") else problem["prompt"]

    def prompt(self, problem):
        prefix = self.answer_prefix(problem)
        if self.mode == "synthesize":
            instruction = problem.get("instruction") or (
                f"Write a {self.language_name} function `{problem.get('signature', problem['entry_point'])}` "
                f"to solve the following problem:\n{problem.get('docstring', '')}"
            )
            return Prompt(instruction=instruction, answer_prefix=prefix, language=self.language)
        context = prefix + problem["buggy_solution"]
        if self.mode == "fix":
            context += "\n" + problem["test"]
        comment = "#" if self.data_language == "python" else "//"
        return Prompt(
            instruction=f"Fix bugs in {problem['entry_point']}.",
            answer_prefix=prefix,
            context=context,
            plain=f"{context}\n{comment} Fix bugs in {problem['entry_point']}.\n{prefix}",
            language=self.language,
        )

    def code_of(self, problem, completion):
        prefix = self.answer_prefix(problem)
        code = extract_code(completion, prefix, problem["entry_point"], self.language)
        if not code.startswith(prefix):  # a fenced answer that wrote the whole function itself
            return code
        return prefix + close_function(code[len(prefix) :], self.open_braces, HELPER.get(self.data_language))

    def program(self, problem, code):
        if self.data_language == "cpp":
            code = code.split("int main")[0]
        if self.data_language == "go":
            return go_program(code, problem["test"], problem.get("import", "") + problem.get("test_setup", ""))
        if self.data_language == "rust":  # two tests call rand 0.4's gen_range(low, high); Debian ships rand 0.8
            return f"{code}\n{_RAND_04_RANGE.sub(_RAND_08_RANGE, problem['test'])}\n"
        return f"{code}\n{problem['test']}\n"


_RAND_04_RANGE, _RAND_08_RANGE = re.compile(r"gen_range\(([^,()]+),\s*([^()]+?)\)"), r"gen_range(\1..\2)"

# standard packages added when the code uses them (the BigCode harness's list for Go)
GO_STANDARD = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand", "crypto/md5")
_GO_IMPORTS = re.compile(r'^import\s*(?:\(([^)]*)\)|("[^"]+"))', re.M)


def go_program(code: str, test: str, given_imports: str) -> str:
    """One `package main` test file: the imports of the problem and of the code that the code or
    the tests use (Go refuses an unused import), then the code without its own package and
    import lines, then the tests (as the BigCode harness assembles Go)."""
    packages: list[str] = list(GO_STANDARD)
    for block, single in _GO_IMPORTS.findall(given_imports + "\n" + code):
        for package in re.findall(r'"([^"]+)"', block or single):
            if package not in packages:
                packages.append(package)
    body = re.sub(r"^package\s+\w+\s*$", "", _GO_IMPORTS.sub("", code), flags=re.M)
    code_only = re.sub(r"//[^\n]*", "", body + test)
    used = [p for p in packages if re.search(rf"\b{re.escape(p.rsplit('/', 1)[-1])}\.", code_only)]
    imports = "".join(f'    "{p}"\n' for p in used)
    return f"package main\n\nimport (\n{imports})\n\n{body.strip()}\n\n{test}\n"


class PackExplain(ExplainStages, HumanEvalPack):
    """`humanevalexplain-{lang}`: describe the reference solution in at most the docstring's
    length, then write the function from that description alone (HumanEvalExplain)."""

    def __init__(self, language: str, data_files: str | None = None):
        super().__init__("explain", language, data_files)
        self.comment = "#" if language == "python" else "//"

    def describe_prompt(self, problem) -> Prompt:
        code = problem["declaration"] + problem["canonical_solution"]
        cap = len(problem.get("docstring") or "") or 200
        instruction = (
            f"{code}\nProvide a concise natural language description of the code using at most {cap} characters."
        )
        name, c = problem["entry_point"], self.comment
        plain = f"{code}\n\n{c} Description of {name} in at most {cap} characters:\n{c} "
        return Prompt(instruction=instruction, answer_prefix="", plain=plain, language=self.language, code_answer=False)

    def clean_description(self, problem, text: str) -> str:
        return strip_code(text, max(len(problem.get("docstring") or ""), 1))

    def prompt_from(self, problem, description: str) -> Prompt:
        instruction = f"Write functional code in {self.language_name} according to the description.\n{description}"
        plain = f"{self.comment} {description}\n{problem['declaration']}"
        return Prompt(
            instruction=instruction, answer_prefix=problem["declaration"], plain=plain, language=self.language
        )

    def prompt(self, problem):  # the regeneration prompt, for scoring completions made elsewhere
        return self.prompt_from(problem, problem.get("description", ""))

    def describe_stop(self) -> list[str]:
        return ["```", "\n\n\n", f"\n{self.comment}\n"]
