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

from codepeft.errors import CodepeftError

if TYPE_CHECKING:
    from codepeft.baselines import TaskPrompt
    from codepeft.execution import Limits, SandboxPool
    from codepeft.generation import GenerationBackend, GenerationSettings

# Stop sequences of the BigCode evaluation harness for Python completion.
PYTHON_STOP = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\nassert"]
FENCE = re.compile(r"```[ \t]*([\w+#-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)


@dataclass
class Prompt:
    """An instruction with the code the answer starts from (the two halves of a template)."""

    instruction: str
    answer_prefix: str  # code the model continues; re-joined with its completion
    plain: str | None = None  # the completion-style prompt for base models (default: answer_prefix)
    context: str | None = None  # what the instruction is about (code to fix), placed as each format wants

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
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": p.request}], tokenize=False, add_generation_prompt=True
        )
        return head + p.answer_prefix
    raise CodepeftError(f"unknown prompt format {fmt!r}; use {', '.join(PROMPT_FORMATS)}")


def extract_code(completion: str, answer_prefix: str, entry_point: str | None = None) -> str:
    """Re-join a completion with its prefix; a fenced answer (chat models) is taken from the fence,
    and used alone when it defines the entry point itself."""
    match = FENCE.search(completion)
    if match is None:
        return answer_prefix + completion
    code = match.group(2)
    if entry_point and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return code
    return answer_prefix + code


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
        completions = ctx.backend.generate(prompts, settings)
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
        return extract_code(completion, self.prompt(problem).answer_prefix, self.entry_point(problem))

    def program(self, problem: dict, code: str) -> str:
        """The full program that runs the problem's tests on the code."""
        raise NotImplementedError

    def limits(self, problem: dict) -> Limits | None:
        """The sandbox limits of this problem's programs (None: the language's defaults)."""
        return None

    def entry_point(self, problem: dict) -> str | None:
        return problem.get("entry_point")
