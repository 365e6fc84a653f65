"""`--config.KEY=VALUE` overrides applied to a locked ConfigDict, with errors a user can act on.

Values are parsed by the type of the field they replace: bools accept true/false/yes/no/1/0,
ints and floats the usual literals (an int is accepted where a float is expected), strings are
taken as written, tuples and lists as Python literals (`"(0.3,0.6)"` or `0.3,0.6`).
"""

import ast

import ml_collections

from cnnjax.errors import UserError, closest

PREFIX = "--config."
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


def split_argv(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates `--config.KEY=VALUE` (or `--config.KEY VALUE`) from the other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(PREFIX):
            body = arg[len(PREFIX) :]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                key, value = body, argv[i + 1]
                i += 1
            else:
                raise UserError(f"{arg} has no value; write {arg}=VALUE.")
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every leaf key of `config` as a dotted path."""
    keys = []
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            keys += flat_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


def _parse(key: str, text: str, current):
    def fail(expected: str):
        raise UserError(
            f"--config.{key}={text}: expected {expected} (the current value is {current!r})."
        )

    if isinstance(current, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        fail("true or false")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            fail("an integer")
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            fail("a number")
    if isinstance(current, str):
        return text
    if isinstance(current, tuple | list):
        try:
            value = ast.literal_eval(text if text.strip().startswith(("(", "[")) else f"({text},)")
        except (ValueError, SyntaxError):
            fail("a tuple such as (1, 2) or 1,2")
        if not isinstance(value, tuple | list):
            value = (value,)
        return type(current)(value)
    # Fields holding None (or anything else) take a Python literal, else the raw string.
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _node_and_leaf(config, key: str):
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(child, ml_collections.ConfigDict):
            raise _unknown(config, key, ".".join(parts[: i + 1]))
        node = child
    if parts[:-1] == ["model"] and parts[-1] not in node:
        # Keys under `model` are the model's own arguments (stem, head, dropout_rate, ...):
        # any name may be added; the model constructor says if it does not take it.
        with node.unlocked():
            node[parts[-1]] = None
        return node, parts[-1]
    if parts[:-1] == ["transfer", "finetune_optim"] and parts[-1] not in node:
        # Phase 2's changes to `optim`: any optim key, parsed by the type of its optim value.
        leaf, optim = parts[-1], config.get("optim")
        if optim is None or leaf not in optim or leaf == "lr":
            valid = ", ".join(k for k in optim.keys() if k != "lr") if optim is not None else ""
            raise UserError(
                f"Unknown config key {key!r}: transfer.finetune_optim takes keys of optim "
                f"({valid}); phase 2's learning rate is transfer.finetune_lr."
            )
        with node.unlocked():
            node[leaf] = optim[leaf]
        return node, leaf
    if parts[-1] not in node or isinstance(node[parts[-1]], ml_collections.ConfigDict):
        raise _unknown(config, key, key)
    return node, parts[-1]


def _unknown(config, key: str, where: str) -> UserError:
    keys = flat_keys(config)
    near = closest(key, keys)
    head = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k for k in keys if head and k.startswith(head + ".")]
    msg = f"Unknown config key {key!r}."
    if near:
        msg += " Did you mean " + " or ".join(repr(k) for k in near) + "?"
    elif siblings:
        msg += f" Keys under {head!r}: {', '.join(s[len(head) + 1 :] for s in siblings)}."
    else:
        msg += f" Top-level keys: {', '.join(sorted(set(k.split('.')[0] for k in keys)))}."
    del where
    return UserError(
        msg + " Every key and its default is in experiments/base.py and the experiment's file."
    )


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]
) -> ml_collections.ConfigDict:
    """Returns a copy of locked `config` with `overrides` [(dotted key, text)] applied."""
    config = ml_collections.ConfigDict(config.to_dict(), type_safe=True)
    config.lock()
    for key, text in overrides:
        node, leaf = _node_and_leaf(config, key)
        current = node[leaf]
        value = _parse(key, text, current)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"--config.{key}={text}: {e}") from e
    return config
