"""Benchmarks as small registry entries: problems, prompts, post-processing and scoring."""

from codepeft.tasks.base import PYTHON_STOP, Prompt, Task, extract_code, render_prompt
from codepeft.tasks.registry import TASKS, all_tasks, get_task

__all__ = ["PYTHON_STOP", "TASKS", "Prompt", "Task", "all_tasks", "extract_code", "get_task", "render_prompt"]
