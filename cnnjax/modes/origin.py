"""Where an experiment comes from, and what a run records of it.

`--experiment` takes a name from the packaged registry (`experiments/__init__.py`, `--list`)
or the path of a Python file anywhere with a `get_config()`; `path.py:ARG` calls
`get_config("ARG")` (ml_collections' config_flags convention, for sweeps). A `NAME:ARG` is
passed on the same way.

The packaged experiments are imported by file location, from the `experiments/` folder that
is installed beside the `cnnjax` package (the checkout's own folder in an editable install),
and bound to the module name `experiments`. A folder of that name in the working directory or
anywhere on `sys.path` cannot shadow them, and `from experiments import base` in an
experiment file (the packaged ones, or a copy of quickstart.py kept anywhere) means cnnjax's
(docs/decisions.md, "An installed command; experiments by file location").

Training records the experiment's origin, the versions and the git commit in `WORKDIR/run.json`
(`record`); the modes that read a run use it when `--experiment` is not given (`of_run`).
"""

import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import os
import platform
import re
import subprocess
import sys
import traceback
from types import ModuleType

import ml_collections

import cnnjax
from cnnjax import workdir as workdir_lib
from cnnjax.errors import UserError, did_you_mean

# The folder installed beside the cnnjax package: site-packages/experiments for a wheel, the
# checkout's experiments/ for an editable install or a plain checkout.
CNNJAX_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cnnjax.__file__)))
PACKAGED = os.path.join(CNNJAX_ROOT, "experiments")
# What `--experiment` takes, for the messages that say so.
_TAKES = "--experiment takes a name (--list shows them) or the path of a .py file with get_config()"


@dataclasses.dataclass(frozen=True)
class Origin:
    """An experiment as `--experiment` names it: a packaged `name`, or an absolute `file`; `arg`
    is what follows the colon (passed to `get_config`), None without one."""

    name: str | None = None
    file: str | None = None
    arg: str | None = None

    @property
    def label(self) -> str:
        """What banners, eval lines and default run folders call it: `quickstart`, `my_exp:7`."""
        base = self.name or os.path.splitext(os.path.basename(self.file or ""))[0]
        return base if self.arg is None else f"{base}:{self.arg}"

    @property
    def spec(self) -> str:
        """The `--experiment` value that names it again, from any directory."""
        base = self.name or self.file or ""
        return base if self.arg is None else f"{base}:{self.arg}"


def parse(spec: str) -> Origin:
    """`quickstart`, `path/to/my_exp.py` or `my_exp.py:ARG` (relative to the working directory,
    recorded absolute). A value with a `/` or a `.` is a file (names are module names)."""
    where, colon, arg = spec.partition(":")
    arg = arg if colon else None
    if "." in where or "/" in where or os.sep in where:
        return Origin(file=os.path.abspath(os.path.expanduser(where)), arg=arg)
    return Origin(name=where, arg=arg)


def registry() -> ModuleType:
    """The packaged `experiments` package (`EXPERIMENTS`, `describe`), imported from `PACKAGED`
    under the name `experiments` whatever `sys.path` holds. A UserError when this process has
    already imported another module by that name (code that calls `cnnjax.cli` in-process)."""
    loaded = sys.modules.get("experiments")
    if loaded is not None:
        folders = [os.path.realpath(p) for p in getattr(loaded, "__path__", [])]
        if os.path.realpath(PACKAGED) in folders:
            return loaded
        where = folders[0] if folders else getattr(loaded, "__file__", None) or repr(loaded)
        raise UserError(
            f"This process has imported another module named 'experiments' ({where}), so "
            f"cnnjax's own experiments ({PACKAGED}) cannot be imported: rename yours, or run "
            "the cnnjax command in a process of its own."
        )
    init = os.path.join(PACKAGED, "__init__.py")
    if not os.path.isfile(init):
        raise UserError(
            f"cnnjax's experiments are missing ({init} does not exist): reinstall cnnjax."
        )
    spec = importlib.util.spec_from_file_location(
        "experiments", init, submodule_search_locations=[PACKAGED]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiments"] = module  # Its own `from experiments import x` find this one.
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in [n for n in sys.modules if n == "experiments" or n.startswith("experiments.")]:
            del sys.modules[name]
        raise
    return module


def get_config(origin: Origin) -> ml_collections.ConfigDict:
    """The experiment's `get_config()` (`get_config(arg)` with an arg). A missing name or file,
    a file that fails to load, has no `get_config`, or whose `get_config` raises or returns
    something else than a ConfigDict: a one-line UserError naming the file."""
    if origin.file is not None:
        module, where = _load_file(origin.file), origin.file
    else:
        experiments = registry().EXPERIMENTS
        if origin.name not in experiments:
            raise UserError(
                f"Unknown experiment {origin.name!r}.{did_you_mean(origin.name, experiments)}"
                " --list shows them all; an experiment file is given by its path "
                "(--experiment=path/to/my_exp.py)."
            )
        module, where = experiments[origin.name], f"Experiment {origin.name!r}"
    function = getattr(module, "get_config", None)
    if not callable(function):
        raise UserError(
            f"{where} has no get_config() function: an experiment file defines get_config() "
            "returning an ml_collections.ConfigDict (copy experiments/quickstart.py)."
        )
    if origin.file is None and origin.arg is None:
        return function()  # A packaged experiment that raises is a bug: its traceback shows.
    args = () if origin.arg is None else (origin.arg,)
    call = f"get_config({origin.arg!r})" if args else "get_config()"
    with _file_on_path(origin.file), _one_line(f"{where}: {call} raised", origin.file):
        config = function(*args)
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(
            f"{where}: {call} returned {type(config).__name__}, not an ml_collections.ConfigDict."
        )
    return config


def _load_file(path: str) -> ModuleType:
    """The module of experiment file `path`, run as `python path` would run it: its folder is
    first on sys.path while it loads (and while its get_config runs), so it can import a
    module beside it."""
    if not os.path.exists(path):
        raise UserError(f"Experiment file {path} does not exist. {_TAKES}.")
    if os.path.isdir(path) or not path.endswith(".py"):
        raise UserError(f"{path} is not a .py file. {_TAKES}.")
    registry()  # First: `from experiments import base` in the file then means cnnjax's.
    name = "cnnjax_experiment_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Dataclasses and pickling look a module up by its name.
    try:
        with _file_on_path(path), _one_line(f"Experiment file {path} failed to load:", path):
            spec.loader.exec_module(module)
    except UserError:
        sys.modules.pop(name, None)
        raise
    return module


@contextlib.contextmanager
def _file_on_path(path: str | None):
    """The folder of `path` first on sys.path for the duration (nothing without a path)."""
    if path is None:
        yield
        return
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


@contextlib.contextmanager
def _one_line(prefix: str, path: str | None):
    """Turns an exception raised by the user's code into a UserError: `prefix`, the type, the
    first line of the message and the line of `path` where it was raised."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        lines = str(e).strip().splitlines()
        message = f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__
        frames = [
            f
            for f in traceback.extract_tb(e.__traceback__)
            if path and os.path.abspath(f.filename) == path
        ]
        at = f" (line {frames[-1].lineno})" if frames and not isinstance(e, SyntaxError) else ""
        raise UserError(f"{prefix} {message}{at}.") from None


def of_run(workdir: str) -> Origin:
    """The experiment the run in `workdir` was trained with (its run.json). A UserError saying
    to pass --experiment when the run has no record, or its experiment file is gone."""
    path = os.path.join(workdir, workdir_lib.RUN_FILE)
    saved = workdir_lib.read_run_record(workdir)
    experiment = (saved or {}).get("experiment")
    if not isinstance(experiment, dict) or not (
        isinstance(experiment.get("name"), str) or isinstance(experiment.get("file"), str)
    ):
        why = "is missing" if saved is None else "names no experiment"
        raise UserError(
            f"{path} {why} (no run there, or one trained before runs recorded their "
            "experiment): pass --experiment=NAME or --experiment=path/to/my_exp.py."
        )
    arg = experiment.get("arg")
    origin = Origin(
        name=experiment.get("name") if isinstance(experiment.get("name"), str) else None,
        file=experiment.get("file") if isinstance(experiment.get("file"), str) else None,
        arg=None if arg is None else str(arg),
    )
    if origin.file is not None and not os.path.isfile(origin.file):
        raise UserError(
            f"The run's experiment file {origin.file} (recorded in {path}) is gone: put it "
            "back, or pass --experiment=NAME or --experiment=path/to/my_exp.py (an explicit "
            "--experiment always wins)."
        )
    print(f"experiment: {origin.spec}, as recorded in {path}", flush=True)
    return origin


def record(origin: Origin) -> dict:
    """What a run records of where it came from (WORKDIR/run.json): the experiment (name, or
    absolute file and arg, with the file's git commit when it is in a repository), the cnnjax
    version and the commit of its checkout (when cnnjax runs from one), and the versions of
    JAX, jaxlib, Flax and Python."""
    experiment = {"name": origin.name, "file": origin.file, "arg": origin.arg, "spec": origin.spec}
    if origin.file is not None:
        experiment["git"] = _git_state(os.path.dirname(origin.file), path=origin.file)
    return {
        "experiment": experiment,
        "cnnjax": {
            "version": cnnjax.__version__,
            "path": os.path.dirname(os.path.abspath(cnnjax.__file__)),
            # Only a checkout whose top folder holds this cnnjax: an installed wheel inside
            # some other repository (a venv in a project) has no commit of its own.
            "git": _git_state(CNNJAX_ROOT, top=CNNJAX_ROOT),
        },
        "versions": {
            **{name: _version(name) for name in ("jax", "jaxlib", "flax", "orbax-checkpoint")},
            "python": platform.python_version(),
        },
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(folder: str, *args: str) -> str | None:
    """`git -C folder ARGS`'s output, or None when git is missing or fails."""
    try:
        proc = subprocess.run(
            ["git", "-C", folder, *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_state(folder: str, *, top: str | None = None, path: str | None = None) -> dict | None:
    """{"commit", "dirty"} of the repository holding `folder` (None outside one, or when its
    top folder is not `top`). dirty: the work tree differs from the commit in tracked files
    (`path`: that file differs, or is not committed)."""
    if not os.path.isdir(folder):
        return None
    root = _git(folder, "rev-parse", "--show-toplevel")
    if not root or (top is not None and os.path.realpath(root) != os.path.realpath(top)):
        return None
    commit = _git(folder, "rev-parse", "HEAD")
    if not commit:
        return None
    if path is None:
        status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    else:
        status = _git(folder, "status", "--porcelain", "--untracked-files=all", "--", path)
    return {"commit": commit, "dirty": None if status is None else bool(status)}
