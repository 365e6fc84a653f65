"""The installed command as a user meets it, in real subprocesses: `cnnjax` (the console
script), `python -m cnnjax` and `python launch.py` are one command; it lists and runs cnnjax's
experiments from any directory, one with an `experiments/` folder of its own included; it
trains experiment files kept outside the repo (`my_exp.py`, `my_exp.py:ARG`); and the modes
that read a run need no `--experiment`."""

import json
import os
import shutil
import subprocess
import sys
import tomllib

import jax
import pytest
from launching import ROOT, TINY_QUICKSTART, launch_env

import cnnjax

CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "cnnjax")
ENTRIES = {
    "script": [CONSOLE_SCRIPT],
    "module": [sys.executable, "-m", "cnnjax"],
    "launch.py": [sys.executable, os.path.join(ROOT, "launch.py")],
}
# The tiny quickstart's settings, for any experiment.
TINY = [arg for arg in TINY_QUICKSTART if not arg.startswith("--experiment=")]

MY_EXP = '''"""Quickstart with a seed from the command line."""

from experiments import quickstart


def get_config(seed="0"):
    c = quickstart.get_config()
    c.seed = int(seed)
    return c
'''


def command(entry: str, args, *, cwd, env=None, timeout=300):
    """Runs the command through `entry` (a key of ENTRIES) in `cwd`; the CompletedProcess."""
    if entry == "script":
        assert os.path.isfile(CONSOLE_SCRIPT), (
            f"no console script {CONSOLE_SCRIPT}: install cnnjax (pip install -e .) to get it"
        )
    return subprocess.run(
        [*ENTRIES[entry], *args],
        cwd=cwd,
        env=launch_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_project(tmp_path):
    """A user's folder with an `experiments/` package of its own (one that fails when imported,
    so any import of it shows) and an experiment file."""
    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "experiments" / "__init__.py").write_text(
        'raise ImportError("the user\'s own experiments/ folder was imported")\n'
    )
    (project / "my_exp.py").write_text(MY_EXP)
    return project


def assert_one_line_error(proc, *needles):
    """Exit code 2, one line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def assert_lists_the_experiments(proc, description="LeNet-5"):
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("quickstart "))
    assert description in line
    assert any(ln.startswith("resnet18_cifar ") for ln in proc.stdout.splitlines())


@pytest.mark.parametrize("entry", ["script", "module"])
def test_list_from_a_folder_with_its_own_experiments(entry, tmp_path):
    project = user_project(tmp_path)
    # PYTHONPATH=. as research projects set it: the folder is on sys.path for both entries.
    proc = command(entry, ["--list"], cwd=project, env={"PYTHONPATH": str(project)})
    assert_lists_the_experiments(proc)


def test_help_shows_the_usage_and_the_command_flags(tmp_path):
    proc = command("script", ["--help"], cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr  # absl's --help exits 1.
    assert "cnnjax --experiment=path/to/my_exp.py[:ARG]" in proc.stdout
    for flag in ("--experiment:", "--workdir:", "--mode:", "--[no]list:", "--compilation_cache:"):
        assert f"  {flag}" in proc.stdout, flag


def test_installed_layout_finds_the_experiments_beside_cnnjax(tmp_path):
    """What a wheel installs (pyproject: the console script, `cnnjax` and `experiments` side by
    side in site-packages), run from a folder with its own `experiments/`."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        pyproject = tomllib.load(f)
    assert pyproject["project"]["scripts"] == {"cnnjax": "cnnjax.cli:entry"}
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"cnnjax*", "experiments*"} <= set(include)

    site = tmp_path / "site-packages"
    for package in ("cnnjax", "experiments"):
        shutil.copytree(
            os.path.join(ROOT, package),
            site / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    quickstart = site / "experiments" / "quickstart.py"
    quickstart.write_text(quickstart.read_text().replace("LeNet-5", "The installed LeNet-5", 1))
    project = user_project(tmp_path)
    proc = command("module", ["--list"], cwd=project, env={"PYTHONPATH": str(site)})
    assert_lists_the_experiments(proc, "The installed LeNet-5")


def _final_eval(workdir) -> dict:
    with open(workdir / "metrics.jsonl") as f:
        evals = [e for e in map(json.loads, f) if e["kind"] == "eval"]
    return max(evals, key=lambda e: e["accuracy"])


def test_experiment_files_train_and_their_runs_evaluate_without_experiment(tmp_path):
    project = user_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    file = str(project / "my_exp.py")

    # An absolute path, from another folder.
    run_a = tmp_path / "run_a"
    proc = command("module", [f"--experiment={file}", f"--workdir={run_a}", *TINY], cwd=elsewhere)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "done: test accuracy" in proc.stdout
    record = json.loads((run_a / "run.json").read_text())
    assert record["experiment"]["file"] == file and record["experiment"]["name"] is None
    assert record["experiment"]["arg"] is None and record["experiment"]["spec"] == file
    assert record["cnnjax"]["version"] == cnnjax.__version__
    assert record["versions"]["jax"] == jax.__version__
    if os.path.isdir(os.path.join(ROOT, ".git")):  # The checkout's commit.
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert record["cnnjax"]["git"]["commit"] == head

    # Relative, with an argument for get_config, by the installed command in the project.
    run_b = tmp_path / "run_b"
    proc = command("script", ["--experiment=my_exp.py:3", f"--workdir={run_b}", *TINY], cwd=project)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    record = json.loads((run_b / "run.json").read_text())
    assert (record["experiment"]["file"], record["experiment"]["arg"]) == (file, "3")
    assert json.loads((run_b / "config.json").read_text())["seed"] == 3

    # Each run's own experiment, with no --experiment, from another folder.
    for entry, run, label in (("launch.py", run_b, "my_exp:3"), ("module", run_a, "my_exp")):
        proc = command(entry, ["--mode=eval", f"--workdir={run}"], cwd=elsewhere)
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert f"as recorded in {run / 'run.json'}" in proc.stdout
        assert f"{label} @ step 40: " in proc.stdout
        assert f"accuracy {_final_eval(run)['accuracy']:.4f}" in proc.stdout


@pytest.mark.parametrize(
    "args, needles",
    [
        # --mode=summary: the quickest mode, had the experiment loaded.
        (["--experiment=missing.py", "--mode=summary"], ["missing.py does not exist", "--list"]),
        (
            ["--experiment=no_get_config.py", "--mode=summary"],
            ["no_get_config.py has no get_config() function"],
        ),
        (
            ["--experiment=raises.py:x", "--mode=summary"],
            ["raises.py: get_config('x') raised ZeroDivisionError", "(line 2)"],
        ),
        (["--mode=eval", "--workdir=not_a_run"], ["run.json is missing", "--experiment=NAME"]),
    ],
)
def test_experiment_file_mistakes_exit_2_with_one_line(args, needles, tmp_path):
    project = user_project(tmp_path)
    (project / "no_get_config.py").write_text("X = 1\n")
    (project / "raises.py").write_text("def get_config(arg):\n    return 1 / 0\n")
    (project / "not_a_run").mkdir()
    assert_one_line_error(command("script", args, cwd=project), *needles)
