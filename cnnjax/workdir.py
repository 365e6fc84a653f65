"""A run's directory and its `config.json`: the one place that writes, compares and reads back
the settings a run was trained with.

- training writes `config.json` (`write_config`) once the run's checkpoints are known to fit;
- a resumed run says which keys differ from it (`note_changes`);
- eval, predict and visualize read a run with its own settings (`with_run_settings`), so a run
  trained with other values needs only `--experiment` and `--workdir`.
"""

import json
import os

import jax

from cnnjax.errors import UserError
from cnnjax.overrides import apply_overrides

CONFIG_FILE = "config.json"


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def as_tree(config) -> dict:
    """A ConfigDict as the nested plain dict that config.json holds."""
    return json.loads(config.to_json_best_effort())


def write_config(config, workdir: str) -> None:
    """Writes config.json (process 0 only)."""
    if jax.process_index() == 0:
        with open(config_path(workdir), "w") as f:
            json.dump(as_tree(config), f, indent=2, sort_keys=True)


def read_config(workdir: str) -> dict | None:
    """The settings saved in the run's config.json, or None when the run has none."""
    path = config_path(workdir)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(saved: dict, config) -> list[str]:
    """The dotted keys whose values differ between a saved tree and `config`, sorted; a key
    only one side has counts as changed."""
    old, new = flatten(saved), flatten(as_tree(config))
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def note_changes(config, workdir: str) -> None:
    """On resume, says which keys differ from the run's saved config.json."""
    saved = read_config(workdir)
    changed = changed_keys(saved, config) if saved is not None else []
    if changed:
        print(
            f"note: resuming with a config that differs from {config_path(workdir)} in: "
            f"{', '.join(changed)}",
            flush=True,
        )


def with_run_settings(config, workdir: str):
    """`config` with the values of the run's config.json where they differ (the command's own
    --config overrides are applied after, so they still win). Keys this version no longer has,
    values it cannot take, and unset (null) values are left out."""
    saved = read_config(workdir)
    if saved is None:
        return config
    values = flatten(saved)
    changed = []
    for key in changed_keys(saved, config):
        value = values.get(key)
        if key not in values or value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        try:
            config = apply_overrides(config, [(key, text)])
        except UserError:
            continue
        changed.append(key)
    if changed:
        print(
            f"using the run's settings from {config_path(workdir)}: {', '.join(changed)}",
            flush=True,
        )
    return config
