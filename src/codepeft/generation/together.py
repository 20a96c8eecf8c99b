"""Generation for several evaluands of one base model in shared batches.

A study evaluates many adapters of the same base. `Together` holds one `HFBackend` over the base
(a peft model with each LoRA adapter loaded under its own name, or the plain base) and answers
the generation calls of several members, each running its usual evaluation in a thread of its
own with a `Member` backend. When every running member waits on a call, the calls are answered
at once: merged batch j holds each member's batch j, the batch it would generate alone, and each
row goes through its member's adapter (peft's mixed-batch inference; "__base__" rows through
none: zero-shot and the prompting baselines). Since a member's batches are its own and every
row samples from its own random stream (codepeft.generation.sampling), and a LoRA row is added
to its base output as peft's single-adapter forward adds it (codepeft.generation.lora_inference), a
member gets the completions it would get evaluated alone; tests/test_together.py checks it.

Members whose calls differ in settings (other than the seed) are answered in separate merged
calls; a member that ends (or fails) leaves, so the others never wait for it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from codepeft.errors import CodepeftError
from codepeft.generation.backends import GenerationBackend, GenerationSettings, HFBackend

BASE = "__base__"  # peft's name for rows that use no adapter


@dataclass
class _Call:
    prompts: list[str]
    settings: GenerationSettings
    result: list[list[str]] = field(default_factory=list)
    truncated: int = 0
    error: BaseException | None = None
    done: bool = False


class Together:
    """Answers the generation calls of `members` (name -> peft adapter name, or BASE) together."""

    def __init__(self, backend: HFBackend, members: dict[str, str], mixed: bool):
        self.backend, self.adapters, self.mixed = backend, dict(members), mixed
        self.cond = threading.Condition()
        self.running = set(members)
        self.waiting: dict[str, _Call] = {}
        self.merged_calls = 0  # generation calls answered, for tests and logs

    def member(self, name: str) -> Member:
        return Member(self, name)

    def ask(self, name: str, prompts: list[str], settings: GenerationSettings) -> tuple[list[list[str]], int]:
        call = _Call(prompts, settings)
        with self.cond:
            if name not in self.running:
                raise CodepeftError(f"member {name!r} has left this shared generation")
            self.waiting[name] = call
            self._answer_when_all_wait()
            while not call.done:
                self.cond.wait()
        if call.error is not None:
            raise call.error
        return call.result, call.truncated

    def leave(self, name: str) -> None:
        """`name` makes no more calls (its evaluation ended or failed)."""
        with self.cond:
            self.running.discard(name)
            self._answer_when_all_wait()

    def _answer_when_all_wait(self) -> None:
        if not self.waiting or len(self.waiting) < len(self.running):
            return
        calls, self.waiting = self.waiting, {}
        groups: dict[str, list[tuple[str, _Call]]] = {}
        for name, call in calls.items():
            groups.setdefault(repr(replace(call.settings, seed=0)), []).append((name, call))
        for group in groups.values():
            try:
                self._answer(group)
            except Exception as err:  # noqa: BLE001 - every member of the merged call gets the error
                for _, call in group:
                    call.error = err
            for _, call in group:
                call.done = True
        self.merged_calls += len(groups)
        self.cond.notify_all()

    def _answer(self, group: list[tuple[str, _Call]]) -> None:
        backend, settings = self.backend, group[0][1].settings
        plans = []
        for name, call in group:
            call.result = [[] for _ in call.prompts]
            call.truncated = backend.truncated(call.prompts, call.settings)
            plans.append((name, call, backend.batches(call.prompts, call.settings)))
        for j in range(max(len(batches) for _, _, batches in plans)):
            texts, adapters, seeds, where = [], [], [], []
            for name, call, batches in plans:
                for i in batches[j] if j < len(batches) else []:
                    texts.append(call.prompts[i])
                    adapters.append(self.adapters[name])
                    seeds.append(call.settings.seed)
                    where.append((call, i))
            out = backend.generate_batch(texts, settings, adapters if self.mixed else None, seeds)
            for (call, i), samples in zip(where, out, strict=True):
                call.result[i] = samples


class Member(GenerationBackend):
    """One member's view of a `Together`: its evaluation calls `generate` as on any backend."""

    name = "hf"  # results read as those of the Hugging Face backend, which they are

    def __init__(self, together: Together, member: str):
        self.together, self.member = together, member
        self.truncated_prompts = 0

    def generate(self, prompts: list[str], settings: GenerationSettings, progress: bool = True) -> list[list[str]]:
        result, truncated = self.together.ask(self.member, prompts, settings)
        self.truncated_prompts += truncated
        return result

    def prompt_budget(self, max_new_tokens: int) -> int | None:
        return self.together.backend.prompt_budget(max_new_tokens)
