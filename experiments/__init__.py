"""Experiments by name. Each module's `get_config()` returns a locked ConfigDict; the first line
of its docstring is the description `launch.py --list` shows."""

from types import ModuleType

from experiments import quickstart

EXPERIMENTS: dict[str, ModuleType] = {
    "quickstart": quickstart,
}


def describe(name: str) -> str:
    doc = EXPERIMENTS[name].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
