"""The packages of cnnjax import strictly downward: every import (module-level or inside a
function) of one cnnjax package goes to a package on a lower line of `LAYERS`, and only the
command line and the modes import the experiments. docs/architecture.md draws the same order."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Top to bottom. A package may import its own modules and any package on a lower line; never
# one on its own line or above.
LAYERS = [
    ("__main__",),  # `python -m cnnjax`: cli.entry(), nothing else.
    ("cli",),
    ("modes",),
    ("runs",),
    ("train",),
    ("tasks",),
    ("viz", "interop", "inference"),
    ("data", "models"),
    ("summary", "workdir", "parallel", "runtime", "memory"),
    ("core", "ops"),
    ("overrides", "lease", "files"),
    ("errors",),
]
RANK = {name: len(LAYERS) - i for i, line in enumerate(LAYERS) for name in line}
MAY_IMPORT_EXPERIMENTS = ("cli", "modes")


def _package_of(module: str) -> str | None:
    """ "cnnjax.train.loop" -> "train"; None for what is not cnnjax."""
    parts = module.split(".")
    return parts[1] if parts[0] == "cnnjax" and len(parts) > 1 else None


def _imports(path: pathlib.Path):
    """(line, imported module) of every import in the file, `from cnnjax import x` as
    "cnnjax.x"."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # Relative: resolve against this module's package.
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base == "cnnjax" else base


def _violations() -> list[str]:
    bad = []
    for path in sorted((ROOT / "cnnjax").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1:] == ("__init__.py",):  # The package face imports nothing of its own.
            continue
        here = _package_of(".".join(rel.with_suffix("").parts))
        assert here in RANK, f"{rel}: package {here!r} has no line in LAYERS"
        for line, target in _imports(path):
            if target.split(".")[0] == "experiments" and here not in MAY_IMPORT_EXPERIMENTS:
                bad.append(f"{rel}:{line} imports {target} (only cli and modes may)")
            there = _package_of(target)
            if there is None or there == here:
                continue
            assert there in RANK, f"{rel}:{line}: {target} is in no line of LAYERS"
            if RANK[there] >= RANK[here]:
                bad.append(f"{rel}:{line} ({here}) imports {target} ({there}): not below it")
    return bad


def test_every_import_goes_down_the_layers():
    assert _violations() == []


def test_the_walk_sees_function_local_and_upward_imports(tmp_path, monkeypatch):
    """The check itself: an upward import hidden in a function is found."""
    fake = tmp_path / "cnnjax" / "data"
    fake.mkdir(parents=True)
    (fake / "leak.py").write_text("def f():\n    from cnnjax.train import loop\n")
    (tmp_path / "cnnjax" / "ops.py").write_text("from cnnjax import tasks\nimport experiments\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    found = _violations()
    assert any("cnnjax/data/leak.py:2 (data) imports cnnjax.train" in v for v in found), found
    assert any("cnnjax/ops.py:1 (ops) imports cnnjax.tasks" in v for v in found), found
    assert any("imports experiments (only cli and modes may)" in v for v in found), found
