"""What a run needs in memory and what the machine has: one line instead of an abort.

When an allocation fails inside XLA the process aborts, and no Python handler runs: a
`std::bad_alloc` from the compiler or a CPU buffer, or `Check failed: buffer_.IsConcrete()`
when NumPy reads a buffer XLA could not allocate. So the big allocations are estimated before
they are made (`require`): the resized dataset (`cnnjax.data.load`), what the devices will hold
(`cnnjax.train.feeds.make_feeds`: the uploaded dataset, the training state, one batch), and
XLA's own plan for a compiled step (`require_compiled`: its temporaries and outputs). Each is
compared with what is available:

- host: the least of MemAvailable (/proc/meminfo; `os.sysconf` where there is none), the
  container's cgroup limit less what it holds (page cache excluded: the kernel reclaims it), and
  the process's address-space limit (`ulimit -v`) less its current size;
- device: `bytes_limit - bytes_in_use` of `Device.memory_stats()` (GPU, TPU). A CPU device is
  the host: its needs add up over the local devices and are compared with the host's.

The estimates count only what must exist at one time (lower bounds), so a run that fits is
never refused; what they miss is still caught where XLA reports it instead of aborting:
RESOURCE_EXHAUSTED and `MemoryError` become an `OutOfMemoryError` (`exhaustion_is_user_error`).
Both say what was needed and which setting to lower (`fix`), in one line, exit 2.
"""

import contextlib
import dataclasses
import os
import resource
from collections.abc import Callable, Iterable, Sequence

from cnnjax.errors import UserError

# The float32 input and output of one chunk of `cnnjax.data.resize` stay under this.
RESIZE_CHUNK_BYTES = 64 * 2**20


class OutOfMemoryError(UserError):
    """The run does not fit in the host's or a device's memory; the message says what to lower.
    A `UserError` (exit 2): the fix is a smaller setting, as for any other setting too big."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """Bytes that can still be allocated, and what limits them (for the message)."""

    available: int
    source: str


Needs = Sequence[tuple[str, int]]  # (what, bytes) of what must be in memory at one time.


def size_text(n: float) -> str:
    """Bytes for people, in powers of 10 as everywhere in cnnjax: '30.2 GB', '5.0 MB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def tree_bytes(tree) -> int:
    """Bytes of every array in a pytree (arrays or `jax.ShapeDtypeStruct`s), at its dtype."""
    import jax
    import numpy as np

    def nbytes(x) -> int:
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype  # A Python scalar.
        # jax's extended dtypes (PRNG keys) are no NumPy dtypes but have an itemsize.
        return int(np.prod(np.shape(x))) * int(getattr(dtype, "itemsize", 0) or 0)

    return sum(nbytes(x) for x in jax.tree.leaves(tree))


def resize_chunk(src_hw: tuple[int, int], size: int, channels: int) -> int:
    """How many images `cnnjax.data.resize` resizes at once: as many as keep the float32 copies
    of a chunk's input (src_hw) and output (size x size) under RESIZE_CHUNK_BYTES (at least 1)."""
    per_image = 4 * channels * (src_hw[0] * src_hw[1] + size * size)
    return max(1, RESIZE_CHUNK_BYTES // per_image)


def resize_needs(shapes: Iterable[tuple[int, int, int, int]], size: int) -> list[tuple[str, int]]:
    """What resizing uint8 arrays of `shapes` [(N, H, W, C), ...] to (N, size, size, C) holds
    at its peak: the resized copies (N x size x size x C bytes, all kept) and the float32 input
    and output of the largest chunk (while it is resized). Empty when nothing changes size."""
    shapes = [tuple(int(d) for d in s) for s in shapes if tuple(s[1:3]) != (size, size)]
    if not shapes:
        return []
    n = sum(s[0] for s in shapes)
    resized = sum(s[0] * size * size * s[3] for s in shapes)
    chunk = max(
        min(s[0], resize_chunk(s[1:3], size, s[3])) * 4 * s[3] * (s[1] * s[2] + size * size)
        for s in shapes
    )
    channels = "/".join(sorted({str(s[3]) for s in shapes}))
    return [
        (f"{n:,} images resized to {size}x{size}x{channels} uint8", resized),
        ("the float32 copies of one chunk while it is resized", chunk),
    ]


def largest_fitting(need: Callable[[int], int], available: int, upper: int) -> int:
    """The largest x in [1, upper] with need(x) <= available, for a need that grows with x;
    0 when not even 1 fits."""
    lo, hi = 0, max(0, int(upper))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= available:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fix(*smaller: tuple[str, int], stream: bool = True) -> str:
    """The end of a message: the config keys to lower, with their values now (0: not shown),
    and, with `stream`, the streaming feed. fix(("batch_size", 1024), ("data.image_size", 224))
    -> "Use a smaller --config.batch_size (now 1024), a smaller ... or --config.data.feeding=..."
    """
    options = [
        f"a smaller --config.{key}" + (f" (now {now})" if now else "") for key, now in smaller
    ]
    if stream:
        options.append("--config.data.feeding=stream (the dataset stays off the device)")
    if len(options) == 1:
        return f"Use {options[0]}."
    return "Use " + ", ".join(options[:-1]) + " or " + options[-1] + "."


def fix_for(config, *, stream: bool = True) -> str:
    """`fix` with a run's batch size and image size."""
    size = int(config.data.get("image_size", 0) or 0)
    return fix(("batch_size", int(config.batch_size)), ("data.image_size", size), stream=stream)


# ---- What the machine has.


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _field_kb(text: str | None, name: str) -> int | None:
    """`name:   123 kB` of /proc/meminfo or /proc/self/status, in bytes."""
    for line in (text or "").splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return None


def _meminfo_available() -> int | None:
    available = _field_kb(_read("/proc/meminfo"), "MemAvailable")
    if available is not None:
        return available
    try:  # No /proc: free pages (less than the kernel could give: page cache is not counted).
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_headroom(root: str = "/sys/fs/cgroup") -> int | None:
    """The container's memory limit less what it holds without page cache (cgroup v2, then
    v1); None without a limit."""
    for limit_file, usage_file, stat_file, cache_keys in (
        ("memory.max", "memory.current", "memory.stat", ("file", "shmem")),
        (
            "memory/memory.limit_in_bytes",
            "memory/memory.usage_in_bytes",
            "memory/memory.stat",
            ("total_cache", "total_shmem"),
        ),
    ):
        limit, usage = _read(os.path.join(root, limit_file)), _read(os.path.join(root, usage_file))
        if limit is None or usage is None:
            continue
        limit = limit.strip()
        if not limit.isdigit() or int(limit) >= 2**60:  # "max", or v1's "no limit".
            return None
        stat = dict(
            (line.split() + ["0"])[:2]
            for line in (_read(os.path.join(root, stat_file)) or "").splitlines()
        )
        cache, shmem = (int(stat.get(k, 0) or 0) for k in cache_keys)
        return int(limit) - (int(usage) - max(0, cache - shmem))
    return None


def _address_space_headroom() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    size = _field_kb(_read("/proc/self/status"), "VmSize")
    if soft == resource.RLIM_INFINITY or size is None:
        return None
    return soft - size


def host_budget() -> Budget | None:
    """What the host can still allocate to this process: the tightest of the limits in the
    module's text; None when none can be read."""
    found = [
        Budget(n, source)
        for n, source in (
            (_meminfo_available(), "MemAvailable of the host"),
            (_cgroup_headroom(), "the container's cgroup memory limit less what it holds"),
            (_address_space_headroom(), "the process's address-space limit, ulimit -v"),
        )
        if n is not None
    ]
    return min(found, key=lambda b: b.available) if found else None


def device_budget(device) -> Budget | None:
    """What `device` can still allocate: free accelerator memory per `memory_stats()`, the
    host's for a CPU device; None when the backend does not say."""
    if device.platform == "cpu":
        return host_budget()
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without statistics: nothing to compare with.
        stats = {}
    if "bytes_limit" not in stats:
        return None
    free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return Budget(free, f"free memory of {device.device_kind} {device.id}, per memory_stats()")


# ---- The checks.


def require(needs: Needs, budget: Budget | None, fix_text: str, where: str = "host") -> None:
    """Raises `OutOfMemoryError` naming every need, their sum, what is available and `fix_text`
    when the `needs` add up to more than `budget` (nothing when the budget is unknown)."""
    total = sum(n for _, n in needs)
    if budget is None or total <= budget.available:
        return
    parts = " + ".join(f"{what} ({size_text(n)})" for what, n in needs if n)
    raise OutOfMemoryError(
        f"Not enough memory: {parts} = {size_text(total)} of {where} memory, but "
        f"{size_text(max(0, budget.available))} is available ({budget.source}). {fix_text}"
    )


def require_on_devices(
    per_device: Needs, devices: Sequence, fix_text: str, host_needs: Needs = ()
) -> None:
    """`require` for what every one of `devices` holds (`per_device`) and what the host holds
    beside it (`host_needs`). CPU devices share the host's memory: their needs add up."""
    devices = list(devices)
    if devices and all(d.platform == "cpu" for d in devices):
        k = len(devices)
        each = [(what + (f" x {k} CPU devices" if k > 1 else ""), n * k) for what, n in per_device]
        require([*host_needs, *each], host_budget(), fix_text)
        return
    require(host_needs, host_budget(), fix_text)
    budgets = [b for b in map(device_budget, devices) if b is not None]
    if budgets:
        tightest = min(budgets, key=lambda b: b.available)
        require(per_device, tightest, fix_text, where="device")


def compiled_bytes(compiled) -> int | None:
    """What running a compiled program allocates beyond its arguments (XLA's plan: its
    temporaries and its outputs that are not donated arguments); None when XLA does not say."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend or cached executable has the analysis.
        return None
    if stats is None:
        return None
    return max(
        0,
        int(stats.temp_size_in_bytes)
        + int(stats.output_size_in_bytes)
        - int(stats.alias_size_in_bytes),
    )


def require_compiled(
    compiled, devices: Sequence, what: str, fix_text: str, *, also: Needs = (), ready=None
) -> None:
    """`require_on_devices` for XLA's plan of `compiled` and what is held beside it while it
    runs (`also`, per device), before it first runs. `ready`: arrays still being computed (an
    initialization in flight), waited for before a refusal, so that their temporaries are not
    taken for memory they leave free."""
    need = compiled_bytes(compiled)
    if not need:
        return
    needs = [(f"{what}: XLA's temporaries and outputs", need), *also]
    try:
        require_on_devices(needs, devices, fix_text)
    except OutOfMemoryError:
        if ready is None:
            raise
        import jax

        jax.block_until_ready(ready)
        require_on_devices(needs, devices, fix_text)


# ---- XLA's and Python's own reports.


def is_exhausted(error: BaseException) -> bool:
    """Whether `error` is running out of memory: a `MemoryError`, or XLA's RESOURCE_EXHAUSTED
    (`jax.errors.JaxRuntimeError`, formerly XlaRuntimeError). A full disk (tensorstore's
    RESOURCE_EXHAUSTED with an os_error_code) is not."""
    if isinstance(error, MemoryError):
        return True
    message = str(error)
    if not isinstance(error, RuntimeError) or "os_error_code" in message:
        return False
    # XLA:CPU also wraps a failed allocation as "INTERNAL: Error dispatching computation: ...
    # Out of memory allocating N bytes."
    xla = type(error).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
    return message.startswith("RESOURCE_EXHAUSTED") or (
        xla and ("RESOURCE_EXHAUSTED" in message or "Out of memory" in message)
    )


def exhausted_line(error: BaseException, fix_text: str, doing: str = "") -> str:
    """One line for an `is_exhausted` error: XLA's first line (what it failed to allocate)."""
    first = (str(error).strip().splitlines() or [""])[0].rstrip(".")
    at = first.find("Out of memory")
    if at > 0 and not first.startswith("RESOURCE_EXHAUSTED"):  # "INTERNAL: Error dispatching..."
        first = first[at:]
    if isinstance(error, MemoryError):
        first = "MemoryError" + (f": {first}" if first else "")
    if len(first) > 300:
        first = first[:297] + "..."
    return f"Out of memory{f' {doing}' if doing else ''} ({first}). {fix_text}"


@contextlib.contextmanager
def exhaustion_is_user_error(fix_text: str, doing: str = ""):
    """Inside: XLA's RESOURCE_EXHAUSTED and `MemoryError` become an `OutOfMemoryError` with one
    line (`exhausted_line`); every other error passes as it is."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_exhausted(e):
            raise
        raise OutOfMemoryError(exhausted_line(e, fix_text, doing)) from e
