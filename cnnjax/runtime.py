"""Process-wide XLA settings, made before JAX starts its backend (XLA reads `XLA_FLAGS` once).

`launch.py` calls `tune_xla_cpu()`; code that imports cnnjax can call it first thing, before
anything touches a JAX array. A setting the user already put in `XLA_FLAGS` always wins.

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
# jaxlib releases where the flag exists and was measured; XLA aborts the process on a flag it
# does not know, so outside this range nothing is set.
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


def tune_xla_cpu(env=None, version=None) -> bool:
    """Turns off XLA:CPU's YNNPACK fusions (see the module's text) where the installed jaxlib
    has the flag; returns whether the flag was added. No effect on GPU or TPU programs."""
    low, high = _TESTED
    if not low <= (version or jaxlib_version()) < high:
        return False
    return add_xla_flag(f"{YNN_FLAG}=", env)
