"""The task contract: problems, prompts, generation and scoring, as overridable hooks.

A task is one class (a subclass of `Task`) and one line in `codepeft.tasks.registry`; the
evaluation (`codepeft.evaluation`) knows nothing of any kind: it calls `Task.run` with an
`EvalContext`. docs/extending.md walks through adding one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from codepeft.data.formats import LANGUAGE_NAMES, code_answer_start
from codepeft.errors import CodepeftError

if TYPE_CHECKING:
    from codepeft.baselines import TaskPrompt
    from codepeft.execution import Limits, SandboxPool
    from codepeft.generation import GenerationBackend, GenerationSettings

# Stop sequences of the BigCode evaluation harness for Python completion.
PYTHON_STOP = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert"]
FENCE = re.compile(r"```[ \t]*([\w+#-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
OPEN_FENCE = re.compile(r"```[\w+#-]*\n\Z")  # a prompt that ends inside an opened code block
# an answer written inside an opened fence ends where the fence closes (or, in Python, where
# top-level code that tries the function begins: small models go on to write tests)
CHAT_CODE_STOP = {"python": ["\n```", "\nif __name__", "\nassert", "\nprint("]}

# how each language defines the function `{name}` (a fenced answer that does is used whole)
_DEFINES = {
    "python": r"^\s*(?:async\s+)?def\s+{name}\s*\(",
    "javascript": r"(?:\bfunction\s+{name}\s*\(|\b{name}\s*=\s*(?:\([^)]*\)|\w+)\s*=>)",
    "go": r"^\s*func\s+{name}\s*[\[(]",
    "rust": r"\bfn\s+{name}\s*[<(]",
}
_DEFINES_BRACED = r"\b{name}\s*\([^;{{}}]*\)[^;{{}}]*\{{"  # Java, C++: a signature followed by a body


@dataclass
class Prompt:
    """An instruction with the code the answer starts from (the two halves of a template)."""

    instruction: str
    answer_prefix: str  # code the model continues; re-joined with its completion
    plain: str | None = None  # the completion-style prompt for base models (default: answer_prefix)
    context: str | None = None  # what the instruction is about (code to fix), placed as each format wants
    language: str = "python"  # of the code (fence tags, the chat layout's wording)
    code_answer: bool = True  # the answer is code: the chat layout opens a code block for it

    @property
    def request(self) -> str:
        """The whole request, instruction first (the octocoder / alpaca / chat order)."""
        return self.instruction if self.context is None else f"{self.instruction}\n{self.context}"


PROMPT_FORMATS = ("plain", "instruct", "octocoder", "alpaca", "chat")


def render_prompt(p: Prompt, fmt: str, tokenizer=None) -> str:
    """Lay a prompt out in one of the training formats, so a tuned model sees what it learned;
    `instruct` is the BigCode harness's format for instruction models (context first)."""
    if fmt == "plain":
        return p.plain if p.plain is not None else p.answer_prefix
    if fmt == "instruct":
        request = p.instruction if p.context is None else f"{p.context}\n{p.instruction}"
        return f"{request}\n\n{p.answer_prefix}"
    if fmt == "octocoder":
        return f"Question: {p.request}\n\nAnswer:\n{p.answer_prefix}"
    if fmt == "alpaca":
        return f"### Instruction:\n{p.request}\n### Response:\n{p.answer_prefix}"
    if fmt == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise CodepeftError("prompt format 'chat' needs a tokenizer with a chat template")
        user, answer_start = chat_turn(p)
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        return head + answer_start
    raise CodepeftError(f"unknown prompt format {fmt!r}; use {', '.join(PROMPT_FORMATS)}")


def chat_turn(p: Prompt) -> tuple[str, str]:
    """(user turn, start of the assistant's answer) for an instruct model, in EvalPlus's
    convention: code the answer builds on goes in a code block of the user turn, and a code
    answer is opened with a code block the model writes whole (not continued from a pre-filled
    function, which chat models close at once). `generate` puts the opened fence back in front
    of each completion, so `extract_code` reads it as the fenced answer it is."""
    tag, name = p.language, LANGUAGE_NAMES.get(p.language, p.language)
    user = p.instruction
    if p.context is not None:
        user += f"\n```{tag}\n{p.context.strip(chr(10))}\n```"
    if not p.code_answer:
        return user, ""
    if p.answer_prefix.strip():
        user += (
            f"\n\nPlease provide a self-contained {name} script that solves the problem in a markdown code "
            f"block, completing this code:\n```{tag}\n{p.answer_prefix.strip(chr(10))}\n```"
        )
    else:
        user += f"\n\nPlease provide a self-contained {name} script that solves the problem in a markdown code block."
    return user, code_answer_start(tag)


def defines(code: str, entry_point: str, language: str = "python") -> bool:
    """Whether `code` defines the function `entry_point` itself (in its language's syntax)."""
    pattern = _DEFINES.get(language, _DEFINES_BRACED).format(name=re.escape(entry_point))
    return re.search(pattern, code, re.M) is not None


def extract_code(completion: str, answer_prefix: str, entry_point: str | None = None, language: str = "python") -> str:
    """Re-join a completion with its prefix; a fenced answer (chat models) is taken from the fence,
    and used alone when it starts with the code it was given or defines the entry point itself."""
    match = FENCE.search(completion)
    if match is None:
        return answer_prefix + completion
    code = match.group(2)
    if entry_point and defines(code, entry_point, language):
        if language == "python":
            code = sanitize_python(code, entry_point)
        return _missing_head(answer_prefix, code, entry_point, language) + code
    first_line = next((line for line in answer_prefix.splitlines() if line.strip()), None)
    if first_line is not None and code.lstrip().startswith(first_line.strip()):
        return code  # the answer repeats the code it was given: it is the whole program
    return answer_prefix + code


_IMPORT_LINE = re.compile(r"^\s*(?:import |from \S+ import |#include|using |use )[^\n]*$", re.M)


def _missing_head(answer_prefix: str, code: str, entry_point: str, language: str) -> str:
    """What a whole fenced answer leaves out of the code it was given: in Python the prompt's
    code before the function (imports, helper functions: the model's own come after and win);
    elsewhere the prompt's import lines the answer does not repeat."""
    if language == "python":
        found = re.search(_DEFINES["python"].format(name=re.escape(entry_point)), answer_prefix, re.M)
        return answer_prefix[: found.start()] if found else ""
    lines = [m.group(0).strip() for m in _IMPORT_LINE.finditer(answer_prefix)]
    return "".join(f"{line}\n" for line in lines if line not in code)


def sanitize_python(code: str, entry_point: str) -> str:
    """A whole Python answer reduced to what a solution module holds, as EvalPlus's sanitiser
    does: unfinished last statements (cut by the token limit) dropped while the entry point
    stays defined, then only imports, definitions and assignments kept (small models go on to
    call and print their function at the top level). Code that does not parse is left as it is."""
    import ast

    lines = code.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line[:1].strip() and not line.startswith((")", "]", "}"))]
    for end in [len(lines), *reversed(starts)]:
        head = "".join(lines[:end])
        try:
            tree = ast.parse(head)
        except SyntaxError:
            continue
        if not defines(head, entry_point):
            return code
        keep = (
            ast.Import,
            ast.ImportFrom,
            ast.FunctionDef,
            ast.AsyncFunctionDef,
            ast.ClassDef,
            ast.Assign,
            ast.AnnAssign,
        )
        body = head.splitlines(keepends=True)
        kept = []
        for node in tree.body:
            if isinstance(node, keep):
                first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
                kept.append("".join(body[first - 1 : node.end_lineno]).rstrip("\n") + "\n")
        return "\n".join(kept)
    return code


def generate(ctx: EvalContext, prompts: list[str], settings: GenerationSettings) -> list[list[str]]:
    """Completions from `ctx.backend`. Prompts that end inside an opened code block (the chat
    layout of a code answer) are answered up to the closing fence, not the task's own stop
    strings (those cut a continued function), and get the opener back in front of each answer."""
    opened = [m.group(0) if (m := OPEN_FENCE.search(text)) else "" for text in prompts]
    if not any(opened):
        return ctx.backend.generate(prompts, settings)
    if not all(opened):
        raise CodepeftError("a generation call mixes chat code answers with other prompts")
    fences = {f[3:-1] for f in opened}
    stop = CHAT_CODE_STOP.get(fences.pop(), ["\n```"]) if len(fences) == 1 else ["\n```"]
    completions = ctx.backend.generate(prompts, replace(settings, stop=stop))
    return [[fence + c for c in cs] for fence, cs in zip(opened, completions, strict=True)]


class TaskKind(StrEnum):
    """What a task measures; `codepeft tasks` shows it and the report groups by it."""

    EXECUTION = "execution"  # programs run against tests in the sandbox: pass@k
    ROBUSTNESS = "robustness"  # execution on perturbed prompts: robust pass@k (ReCode)
    MATCH = "match"  # text compared with references: exact match, BLEU, chrF, CodeBLEU
    CLASSIFICATION = "classification"  # one YES/NO answer per question: accuracy, F1
    SECURITY = "security"  # completions judged by a static analyser, nothing executed
    LOSS = "loss"  # held-out cross-entropy; nothing is generated


class Prompter(Protocol):
    """Renders prompts for generation: as they are, or with a prompting baseline's examples."""

    def __call__(self, prompts: list[Prompt]) -> list[str]: ...

    def render(self, tests: list[TaskPrompt], queries: list[str]) -> list[str]: ...


@dataclass
class EvalContext:
    """What `Task.run` gets from `codepeft.evaluation.evaluate` besides its problems."""

    backend: GenerationBackend
    settings: GenerationSettings  # n, temperature, max tokens...; each task sets its own stop strings
    ks: list[int]
    pool: SandboxPool | None  # None unless some task of the evaluation `needs_sandbox`
    fmt: str  # the prompt format the model was trained on (render_prompt)
    tokenizer: Any
    prompter: Prompter


@dataclass
class Task:
    """One benchmark: its problems, their prompts, how to generate for them and how to score.

    The default flow is the execution task's (HumanEval and kin): `run` renders `prompt(p)` for
    every problem, generates `settings.n` completions each, and `score` runs `program(p, code)`
    in the sandbox, where `code` is `code_of(p, completion)`. Other kinds override one hook:
    `score` (match, classification, security), `render` (match: laid out as training examples),
    `run` (loss: no generation; ReCode: perturbed variants; explain: two generation stages),
    `samples` (classification: one answer) or `limits` (EvalPlus: time limits per problem).
    `score` is also what `codepeft score` calls on completions made elsewhere.
    """

    name: str
    description: str
    metrics: tuple[str, ...]
    source: str
    kind: TaskKind = TaskKind.EXECUTION
    language: str = "python"
    stop: list[str] = field(default_factory=lambda: list(PYTHON_STOP))

    def __post_init__(self):
        try:
            self.kind = TaskKind(self.kind)
        except ValueError:
            kinds = ", ".join(k.value for k in TaskKind)
            raise CodepeftError(f"task {self.name!r}: kind {self.kind!r} is not one of {kinds}") from None

    # --- what the evaluation asks of every task -------------------------------------------------
    @property
    def needs_sandbox(self) -> bool:
        """Whether scoring runs programs (the evaluation then starts a sandbox pool)."""
        return self.kind in (TaskKind.EXECUTION, TaskKind.ROBUSTNESS)

    @property
    def generates(self) -> bool:
        """Whether the task samples completions (so pass@k's k must not exceed n)."""
        return self.kind is not TaskKind.LOSS

    @property
    def takes_examples(self) -> bool:
        """Whether a prompting baseline (ICL, RAG) may put examples in front of its prompts;
        classification tasks keep their own shots, loss tasks have no prompt."""
        return self.kind not in (TaskKind.LOSS, TaskKind.CLASSIFICATION)

    def unavailable(self) -> str | None:
        """Why this task cannot be scored on this machine (a missing toolchain), or None."""
        if not self.needs_sandbox:
            return None
        from codepeft.execution import get_language

        missing = get_language(self.language).missing()
        return f"{self.name}: {missing}" if missing else None

    # --- hooks ------------------------------------------------------------------------------------
    def problems(self) -> list[dict[str, Any]]:
        """Every problem, each a dict with at least `task_id`."""
        raise NotImplementedError

    def prompt(self, problem: dict) -> Prompt:
        """The instruction and the code the answer starts from (see `render_prompt`)."""
        raise NotImplementedError

    def samples(self, settings: GenerationSettings) -> int:
        """Completions to sample per problem."""
        return settings.n

    def render(self, problems: list[dict], ctx: EvalContext) -> list[str]:
        """The prompt texts to generate from: `prompt(p)` in the model's format, with a baseline's
        examples in front when one is evaluated."""
        return ctx.prompter([self.prompt(p) for p in problems])

    def run(self, problems: list[dict], ctx: EvalContext) -> dict:
        """Generate for the problems and score: {"scores": {metric: {...}}, "problems": [...]}."""
        prompts = self.render(problems, ctx)
        settings = replace(ctx.settings, n=self.samples(ctx.settings), stop=self.stop)
        completions = generate(ctx, prompts, settings)
        result = self.score(problems, completions, ctx.ks, ctx.pool)
        for record, prompt in zip(result["problems"], prompts, strict=True):
            record["prompt"] = prompt
        return result

    def score(self, problems: list[dict], completions: list[list[str]], ks: list[int], pool) -> dict:
        """Score completions[i] (samples of problems[i]); by default pass@k in the sandbox."""
        from codepeft.tasks.scoring import score_execution

        return score_execution(self, problems, completions, ks, pool)

    def code_of(self, problem: dict, completion: str) -> str:
        """The code a completion stands for: re-joined with the prompt's code, or its fence."""
        return extract_code(completion, self.prompt(problem).answer_prefix, self.entry_point(problem), self.language)

    def program(self, problem: dict, code: str) -> str:
        """The full program that runs the problem's tests on the code."""
        raise NotImplementedError

    def limits(self, problem: dict) -> Limits | None:
        """The sandbox limits of this problem's programs (None: the language's defaults)."""
        return None

    def entry_point(self, problem: dict) -> str | None:
        return problem.get("entry_point")

    def problem_scores(self, result: dict) -> list[dict]:
        """Per-problem scores of a result for the store, what paired tests between methods compare
        (`codepeft.metrics.per_problem`: read from the shape of the result's records). A task whose
        records have another shape overrides this."""
        from codepeft.metrics.per_problem import problem_scores

        return problem_scores(result)
