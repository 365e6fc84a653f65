"""cnnjax.modes.origin: what `--experiment` names (a packaged name, a file, `file.py:ARG`), the
packaged registry imported by file location, and what a run records (run.json).

The user-visible side (the installed command, files outside the repo, exit codes) is in
tests/test_command.py, through real subprocesses."""

import json
import os
import subprocess
import sys
import types

import jax
import pytest
from launching import ROOT

import cnnjax
from cnnjax import modes
from cnnjax import workdir as workdir_lib
from cnnjax.errors import UserError
from cnnjax.modes import origin
from cnnjax.modes.train import default_workdir

MY_EXP = '''"""Quickstart with a seed from the command line."""

from experiments import quickstart


def get_config(seed="0"):
    c = quickstart.get_config()
    c.seed = int(seed)
    return c
'''


def test_parse_tells_names_from_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert origin.parse("quickstart") == origin.Origin(name="quickstart")
    assert origin.parse("quickstart:a") == origin.Origin(name="quickstart", arg="a")
    file = str(tmp_path / "my_exp.py")
    assert origin.parse("my_exp.py") == origin.Origin(file=file)
    assert origin.parse("my_exp.py:3") == origin.Origin(file=file, arg="3")
    assert origin.parse("my_exp.py:a:b") == origin.Origin(file=file, arg="a:b")  # First colon.
    assert origin.parse("my_exp.py:") == origin.Origin(file=file, arg="")
    assert origin.parse("sub/exp") == origin.Origin(file=str(tmp_path / "sub" / "exp"))
    assert origin.parse("notes.txt") == origin.Origin(file=str(tmp_path / "notes.txt"))
    home = os.path.expanduser("~/research/my_exp.py")  # The shell leaves `--x=~/...` alone.
    assert origin.parse("~/research/my_exp.py:1") == origin.Origin(file=home, arg="1")
    assert origin.parse(f"{file}:3").label == "my_exp:3"
    assert origin.parse("my_exp.py:3").spec == f"{file}:3"  # Names it again from anywhere.
    assert origin.parse("quickstart").label == origin.parse("quickstart").spec == "quickstart"


def test_the_registry_is_the_folder_beside_cnnjax():
    registry = origin.registry()
    assert origin.PACKAGED == os.path.join(ROOT, "experiments")
    assert [os.path.realpath(p) for p in registry.__path__] == [os.path.realpath(origin.PACKAGED)]
    assert registry.EXPERIMENTS["quickstart"].__name__ == "experiments.quickstart"
    assert origin.registry() is registry


def test_another_module_named_experiments_is_a_clear_error(monkeypatch, tmp_path):
    mine = types.ModuleType("experiments")
    mine.__path__ = [str(tmp_path)]
    monkeypatch.setitem(sys.modules, "experiments", mine)
    with pytest.raises(UserError, match="another module named 'experiments'") as e:
        origin.registry()
    assert str(tmp_path) in str(e.value) and origin.PACKAGED in str(e.value)


def test_an_experiment_file_gets_the_packaged_experiments_and_its_arg(tmp_path):
    (tmp_path / "experiments").mkdir()  # A folder of that name beside it changes nothing.
    (tmp_path / "experiments" / "__init__.py").write_text("raise ImportError('not this one')\n")
    (tmp_path / "my_exp.py").write_text(MY_EXP)
    path = str(tmp_path / "my_exp.py")
    assert origin.get_config(origin.Origin(file=path)).seed == 0
    config = origin.get_config(origin.Origin(file=path, arg="7"))
    assert config.seed == 7 and config.model.name == "lenet5"


def test_an_experiment_file_imports_a_module_beside_it_while_it_loads(tmp_path):
    (tmp_path / "sweep_settings_for_test.py").write_text("LR = 0.25\n")
    (tmp_path / "sweep.py").write_text(
        "from experiments import quickstart\n"
        "import sweep_settings_for_test as settings\n\n\n"
        "def get_config(scale):\n"
        "    c = quickstart.get_config()\n"
        "    c.optim.lr = settings.LR * float(scale)\n"
        "    return c\n"
    )
    path = sys.path[:]
    config = origin.get_config(origin.parse(f"{tmp_path / 'sweep.py'}:2"))
    assert config.optim.lr == 0.5
    assert sys.path == path  # The folder was on sys.path only while the file ran.


@pytest.mark.parametrize(
    "source, needles",
    [
        ("missing.py", ["Experiment file", "missing.py does not exist", "--list"]),
        ("folder.py", ["folder.py is not a .py file"]),
        ("notes.txt", ["notes.txt is not a .py file"]),
        ("no_get_config.py", ["no_get_config.py has no get_config() function"]),
        ("raises.py:x", ["raises.py: get_config('x') raised ZeroDivisionError", "(line 2)"]),
        ("syntax.py", ["syntax.py failed to load: SyntaxError", "line 1"]),
        ("fails_to_import.py", ["failed to load: ImportError", "'nothing'", "(line 1)"]),
        ("returns_dict.py", ["get_config() returned dict, not an ml_collections.ConfigDict"]),
        ("no_arg.py:3", ["get_config('3') raised TypeError"]),
        ("quickstart:3", ["Experiment 'quickstart': get_config('3') raised TypeError"]),
        ("quickstrat", ["Unknown experiment 'quickstrat'", "'quickstart'", "path/to/my_exp.py"]),
    ],
)
def test_what_an_experiment_cannot_be_is_one_line(source, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.py").mkdir()
    (tmp_path / "notes.txt").write_text("def get_config():\n    pass\n")
    (tmp_path / "no_get_config.py").write_text("X = 1\n")
    (tmp_path / "raises.py").write_text("def get_config(arg):\n    return 1 / 0\n")
    (tmp_path / "syntax.py").write_text("def get_config(:\n")
    (tmp_path / "fails_to_import.py").write_text("from experiments import nothing\n")
    (tmp_path / "returns_dict.py").write_text("def get_config():\n    return {}\n")
    (tmp_path / "no_arg.py").write_text(MY_EXP.replace('seed="0"', ""))
    with pytest.raises(UserError) as e:
        origin.get_config(origin.parse(source))
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def _git_head(folder: str) -> str | None:
    git = ["git", "-C", folder, "rev-parse", "HEAD"]
    proc = subprocess.run(git, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_record_says_where_the_experiment_came_from_and_the_versions(tmp_path):
    named = origin.record(origin.Origin(name="quickstart"))
    assert named["experiment"] == {
        "name": "quickstart",
        "file": None,
        "arg": None,
        "spec": "quickstart",
    }
    assert named["cnnjax"]["version"] == cnnjax.__version__
    assert named["versions"]["jax"] == jax.__version__
    assert named["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    head = _git_head(ROOT)
    if head is not None and os.path.isdir(os.path.join(ROOT, ".git")):  # A checkout.
        assert named["cnnjax"]["git"]["commit"] == head
        assert isinstance(named["cnnjax"]["git"]["dirty"], bool)
    json.dumps(named)  # Plain JSON.

    file = str(tmp_path / "my_exp.py")
    recorded = origin.record(origin.Origin(file=file, arg="3"))["experiment"]
    assert (recorded["file"], recorded["arg"], recorded["spec"]) == (file, "3", f"{file}:3")
    if _git_head(str(tmp_path)) is None:  # A temporary folder outside any repository.
        assert recorded["git"] is None


def test_a_file_in_a_repository_records_its_commit_and_whether_it_changed(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    if subprocess.run([*git, "init", "-q"], capture_output=True).returncode != 0:
        pytest.skip("no git here")
    (tmp_path / "my_exp.py").write_text(MY_EXP)
    file = str(tmp_path / "my_exp.py")
    assert origin.record(origin.Origin(file=file))["experiment"]["git"] is None  # No commit yet.
    subprocess.run([*git, "add", "my_exp.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "exp"], check=True)
    state = origin.record(origin.Origin(file=file))["experiment"]["git"]
    assert state == {"commit": _git_head(str(tmp_path)), "dirty": False}
    (tmp_path / "my_exp.py").write_text(MY_EXP + "# changed\n")
    assert origin.record(origin.Origin(file=file))["experiment"]["git"]["dirty"] is True


def test_a_run_without_experiment_uses_the_recorded_one_and_an_explicit_one_wins(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=r"run.json is missing .* pass --experiment=NAME"):
        modes.origin_of(None, "eval", str(run))
    (tmp_path / "my_exp.py").write_text(MY_EXP)
    file = str(tmp_path / "my_exp.py")
    workdir_lib.write_run_record(str(run), origin.record(origin.Origin(file=file, arg="3")))
    for mode in modes.READS_A_RUN:
        assert modes.origin_of(None, mode, str(run)) == origin.Origin(file=file, arg="3")
    assert modes.origin_of("quickstart", "eval", str(run)) == origin.Origin(name="quickstart")
    config = modes.resolve(modes.origin_of(None, "eval", str(run)), "eval", str(run), [])
    assert config.seed == 3
    for mode in ("train", "summary", "benchmark"):  # These need --experiment.
        with pytest.raises(UserError, match="Which experiment"):
            modes.origin_of(None, mode, str(run))
    with pytest.raises(UserError, match="Which experiment"):
        modes.origin_of(None, "eval", None)
    with pytest.raises(UserError, match="nowhere/run.json is missing"):
        modes.origin_of(None, "eval", str(tmp_path / "nowhere"))

    os.remove(file)
    with pytest.raises(UserError, match="experiment file .*my_exp.py .* is gone"):
        modes.origin_of(None, "eval", str(run))
    (run / workdir_lib.RUN_FILE).write_text('{"experiment": 3}')
    with pytest.raises(UserError, match="names no experiment"):
        modes.origin_of(None, "eval", str(run))
    (run / workdir_lib.RUN_FILE).write_text("{torn")
    with pytest.raises(UserError, match="run.json is not valid JSON"):
        modes.origin_of(None, "eval", str(run))


def test_default_workdir_of_a_file_with_an_arg_is_a_plain_folder_name():
    path = default_workdir("my_exp:3/4")
    assert os.path.dirname(path) == "runs"
    assert os.path.basename(path).startswith("my_exp_3_4-")
