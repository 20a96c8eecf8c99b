"""Benchmarks as small registry entries: problems, prompts, generation and scoring (the `Task` contract)."""

from codepeft.tasks.base import PYTHON_STOP, EvalContext, Prompt, Task, TaskKind, extract_code, render_prompt
from codepeft.tasks.registry import TASKS, all_tasks, get_task, register_task

__all__ = [
    "PYTHON_STOP",
    "TASKS",
    "EvalContext",
    "Prompt",
    "Task",
    "TaskKind",
    "all_tasks",
    "extract_code",
    "get_task",
    "register_task",
    "render_prompt",
]
