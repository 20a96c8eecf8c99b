"""The one exception type a user can cause; the CLI prints its message without a traceback."""

import difflib


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class CodepeftError(Exception):
    """A problem the user can fix: bad config, missing field, unknown method, impossible combination."""


class NonFiniteLossError(CodepeftError):
    """Training diverged: a NaN or infinite loss or gradient, or a gradient norm far above its
    recent values; carries the step and the last good checkpoint, if any."""

    def __init__(self, step: int, loss: float, last_checkpoint: str | None, what: str | None = None):
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved yet"
        what = what or f"training loss became {loss}"
        super().__init__(
            f"{what} at step {step}; the run was stopped before the optimizer applied it and {where} "
            "(`--resume` continues from it). Lower the learning rate, enable gradient clipping "
            "(train.max_grad_norm) or use fp32."
        )
        self.step = step
        self.loss = loss
        self.last_checkpoint = last_checkpoint
