"""Process-wide XLA settings, made before JAX starts its backend (XLA reads `XLA_FLAGS` once).

`launch.py` calls `tune_xla_cpu()`; code that imports cnnjax can call it first thing, before
anything touches a JAX array. A setting the user already put in `XLA_FLAGS` always wins.

Experiments choose with `config.xla_cpu_ynn_fusions` ("" by default: none).

Why the CPU setting (measured in benchmarks/RESULTS.md, "XLA:CPU's YNNPACK fusions"): jaxlib
0.10 sends each convolution of the training step to YNNPACK by default, and on an AVX-512 x86
CPU those run slower than XLA's Eigen convolutions. With YNNPACK fusions off, the train step ran
1.25x (ResNet-18), 1.5x (the 2-conv CIFAR model) and 1.1x (LeNet-5) faster on the 2-core dev box,
and the training losses agree to float32 rounding (tests/test_runtime.py). Off is also the
setting other projects use against YNNPACK fusion miscompilations reported in jaxlib 0.11.
"""

import os
import re

# XLA:CPU's YNNPACK library fusions: an empty list turns them all off.
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib releases known to have the flag: measured here on 0.10 (0.10.2); other projects set
# it on 0.11 (0.11.2). XLA aborts the process on a flag it does not know, so outside this
# range nothing is set.
_TESTED = ((0, 10), (0, 12))


def _version(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else (0, 0)


def jaxlib_version() -> tuple[int, int]:
    """(major, minor) of the installed jaxlib, read without importing it ((0, 0) if absent)."""
    from importlib import metadata

    try:
        return _version(metadata.version("jaxlib"))
    except metadata.PackageNotFoundError:
        return (0, 0)


def add_xla_flag(flag: str, env=None) -> bool:
    """Appends `--name=value` to `XLA_FLAGS` unless the user's flags already name it; returns
    whether it was added. Takes effect only if the backend has not started yet."""
    env = os.environ if env is None else env
    name = flag.split("=", 1)[0]
    current = env.get("XLA_FLAGS", "")
    if any(word.split("=", 1)[0] == name for word in current.split()):
        return False
    env["XLA_FLAGS"] = f"{current} {flag}".strip()
    return True


YNN_FUSION_KINDS = ("dot", "eltwise", "reduce", "individual_dot", "individual_convolution")


def ynn_fusions(value: str) -> str:
    """The checked value of `config.xla_cpu_ynn_fusions` ("" none, "default" jaxlib's, or a
    comma list of YNN_FUSION_KINDS); UserError names the bad kind (XLA would abort on it)."""
    from cnnjax.errors import UserError, did_you_mean

    value = str(value).strip().lower()
    if value == "default":
        return value
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    for kind in kinds:
        if kind not in YNN_FUSION_KINDS:
            raise UserError(
                f"config.xla_cpu_ynn_fusions: unknown fusion kind {kind!r}."
                f"{did_you_mean(kind, YNN_FUSION_KINDS)} Use a comma list of "
                f"{', '.join(YNN_FUSION_KINDS)}; '' for none or 'default' for jaxlib's."
            )
    return ",".join(kinds)


def tune_xla_cpu(fusions: str = "", env=None, version=None) -> bool:
    """Limits XLA:CPU's YNNPACK fusions to `fusions` (default: none; see the module's text)
    where the installed jaxlib has the flag; returns whether the flag was added. "default"
    leaves jaxlib's choice. No effect on GPU or TPU programs."""
    fusions = ynn_fusions(fusions)
    low, high = _TESTED
    if fusions == "default" or not low <= (version or jaxlib_version()) < high:
        return False
    return add_xla_flag(f"{YNN_FLAG}={fusions}", env)
