"""The command line's mode choices are the mode table's (cli cannot import the modes before the
flags parse: they import JAX), and its flags are defined when the command runs, never when a
cnnjax module is imported."""

import json
import subprocess
import sys

from absl import flags
from launching import ROOT

from cnnjax import cli, modes


def test_the_mode_flag_offers_exactly_the_modes_of_the_table():
    assert sorted(cli.MODES) == sorted(modes.MODES)


def test_flag_suggestions_come_from_the_defined_flags():
    names = cli._own_flags(cli.define_flags(flags.FlagValues()))
    assert "compilation_cache" in names and "experiment" in names
    assert "verbosity" not in names  # absl's own flags are not suggested.


def test_flags_are_defined_on_the_given_flag_values_once():
    flag_values = flags.FlagValues()
    assert cli.define_flags(flag_values) is flag_values
    cli.define_flags(flag_values)  # Again (parse_flags always calls it): no DuplicateFlagError.
    assert {"experiment", "workdir", "mode", "list", "images"} <= set(cli._own_flags(flag_values))
    flag_values(["prog", "--experiment=my_exp.py:3", "--workdir=run"])
    assert flag_values.experiment == "my_exp.py:3" and flag_values.mode == "train"


# A research script with flags of its own, named like the command's, that imports every cnnjax
# module (and the packaged experiments): what it gains in absl.flags.FLAGS, by defining module.
_SCRIPT = """
import importlib, json, pkgutil
from absl import flags
import absl.logging  # What every absl script has.

flags.DEFINE_string("workdir", "mine", "The script's own --workdir.")
flags.DEFINE_string("experiment", "mine", "The script's own --experiment.")
flags.DEFINE_integer("mode", 0, "The script's own --mode, of another type.")
before = set(flags.FLAGS)
import cnnjax
names = [m.name for m in pkgutil.walk_packages(cnnjax.__path__, "cnnjax.")]
for name in names:
    importlib.import_module(name)
from cnnjax.modes import origin
origin.registry()
gained = {n: flags.FLAGS.find_module_defining_flag(n) for n in set(flags.FLAGS) - before}
flags.FLAGS(["script", "--workdir=/tmp/elsewhere", "--mode=3"])
print(json.dumps({"modules": names, "gained": gained, "workdir": flags.FLAGS.workdir,
                  "mode": flags.FLAGS.mode}))
"""


def test_importing_cnnjax_defines_no_flag_and_a_script_keeps_its_own_workdir():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr  # No DuplicateFlagError.
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"cnnjax.cli", "cnnjax.__main__", "cnnjax.modes.origin", "cnnjax.train.loop"} <= set(
        out["modules"]
    )
    # Libraries cnnjax imports (grain, orbax, array_record) define flags of their own when
    # imported; no module of cnnjax or its experiments does.
    ours = {
        name: module
        for name, module in out["gained"].items()
        if module.split(".")[0] in ("cnnjax", "experiments", "__main__")
    }
    assert ours == {}
    assert not set(out["gained"]) & {"workdir", "experiment", "mode", "list", "images"}
    assert (out["workdir"], out["mode"]) == ("/tmp/elsewhere", 3)
