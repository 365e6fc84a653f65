"""launch.py's persistent compilation cache: on by flag, written where asked, off when asked."""

import os

from launching import TINY_QUICKSTART, launch

# The tiny run compiles in well under JAX's default one-second threshold for caching.
_CACHE_EVERYTHING = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}


def test_cache_directory_receives_the_compiled_steps(tmp_path):
    cache = tmp_path / "xla"
    args = [*TINY_QUICKSTART, "--config.num_train_steps=5", f"--workdir={tmp_path / 'run'}"]
    proc = launch([*args, f"--compilation_cache={cache}"], env=_CACHE_EVERYTHING)
    assert proc.returncode == 0, proc.stderr
    names = os.listdir(cache)
    # The fused train step and the evaluation are both kept for the next run.
    assert any(n.startswith("jit_fused") for n in names), names
    assert any(n.startswith("jit_evaluate") for n in names), names


def _run_with_home(tmp_path, *flags):
    """A tiny run whose default cache (~/.cache/cnnjax/xla, as shipped) lies under tmp_path."""
    home = tmp_path / "home"
    env = {
        **_CACHE_EVERYTHING,
        "HOME": str(home),
        "CNNJAX_COMPILATION_CACHE": "~/.cache/cnnjax/xla",
    }
    args = [*TINY_QUICKSTART, "--config.num_train_steps=5", f"--workdir={tmp_path / 'run'}"]
    proc = launch([*args, *flags], env=env)
    assert proc.returncode == 0, proc.stderr
    return home / ".cache" / "cnnjax" / "xla"


def test_default_cache_lives_under_the_home_directory(tmp_path):
    assert any(n.startswith("jit_fused") for n in os.listdir(_run_with_home(tmp_path)))


def test_off_writes_no_cache(tmp_path):
    assert not _run_with_home(tmp_path, "--compilation_cache=off").exists()


def test_damaged_entries_are_one_warning_and_replaced_by_the_fresh_compile(tmp_path):
    """Entries overwritten with garbage, truncated or with flipped bytes: JAX warned (two lines
    each) and compiled again on every later run, never replacing them. Now: one warning line,
    the fresh compile replaces them, and the next run reads them without a word."""
    cache = tmp_path / "xla"
    args = [*TINY_QUICKSTART, "--config.num_train_steps=5", f"--compilation_cache={cache}"]
    launch([*args, f"--workdir={tmp_path / 'a'}"], env=_CACHE_EVERYTHING, check=True)
    entries = sorted(p for p in cache.iterdir() if p.name.endswith("-cache"))
    assert len(entries) >= 3, entries
    for i, entry in enumerate(entries):
        data = entry.read_bytes()
        if i % 3 == 0:
            entry.write_bytes(os.urandom(64))
        elif i % 3 == 1:
            entry.write_bytes(data[: len(data) // 2])  # A torn write.
        else:
            middle = len(data) // 2
            entry.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    damaged = {p.name: p.read_bytes() for p in entries}

    healed = launch([*args, f"--workdir={tmp_path / 'b'}"], env=_CACHE_EVERYTHING, check=True)
    warnings = [ln for ln in healed.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: the compilation cache"), (
        healed.stderr
    )
    assert str(cache) in warnings[0]
    for name, data in damaged.items():
        assert (cache / name).read_bytes() != data, name  # Replaced by the fresh compile.

    again = launch([*args, f"--workdir={tmp_path / 'c'}"], env=_CACHE_EVERYTHING, check=True)
    assert again.stderr.strip() == "", again.stderr
