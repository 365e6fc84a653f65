"""The one exception type for user mistakes.

`launch.py` prints a `UserError` as a single line and exits with code 2; anything else is a
bug and keeps its traceback.
"""

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix: the message says what to do."""


def first_line(error: BaseException, limit: int = 0) -> str:
    """The first line of `error`'s message (its type's name when it has none), cut to `limit`
    characters when `limit` > 0: what a one-line message quotes of a library's error."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if limit <= 0 or len(text) <= limit else text[: limit - 3] + "..."


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Returns up to `n` candidates that look like `name`, best first."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not matches:
        # Fall back to prefix/substring matches ("resnet" -> "resnet18", "resnet50").
        matches = [c for c in candidates if name and (c.startswith(name) or name in c)][:n]
    return matches


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    matches = closest(name, candidates)
    if not matches:
        return ""
    return " Did you mean " + " or ".join(repr(m) for m in matches) + "?"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step (exit code 3)."""


class MetricsWriteError(Exception):
    """A run's log could not be written (metrics.jsonl, TensorBoard, summary.txt, plots): the
    disk is full or refused it. The message names the file, the OS error and what the
    checkpoints hold (exit code 4, like a checkpoint that could not be written)."""
