"""Session-wide test settings."""

import os
import tempfile

import pytest
from launching import FAST_COMPILE_XLA_FLAGS, TINY_QUICKSTART, launch

# This process compiles as the launched runs do (launching.FAST_COMPILE_XLA_FLAGS): the runs
# that tests start in-process (experiments under mock data, a few steps) spend most of their
# time compiling. XLA reads XLA_FLAGS once, at the first compilation: after this conftest.
os.environ["XLA_FLAGS"] = " ".join(
    [*os.environ.get("XLA_FLAGS", "").split(), *FAST_COMPILE_XLA_FLAGS]
)

# The runs that tests start through launch.py (subprocesses inheriting this environment) share
# a persistent compilation cache private to this test process, for every compilation however
# short: a killed-and-resumed run, or the same tiny config in the next test, reuses the
# identical executable instead of compiling it again. Nothing is read from the user's ~/.cache,
# and each pytest-xdist worker has its own directory, so no two workers write one cache.
os.environ["CNNJAX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="cnnjax-test-xla-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
# Decoded datasets (cnnjax.data.cache) go to a directory private to this test process too.
os.environ["CNNJAX_DATA_CACHE"] = tempfile.mkdtemp(prefix="cnnjax-test-data-")


@pytest.fixture(scope="session")
def quickstart_20_steps(tmp_path_factory):
    """The workdir of a finished 20-step tiny quickstart on one device, launched once per test
    process for the tests that read one (tests/test_parallel.py, tests/train/test_transfer.py).
    Read-only: a test that resumes or changes a run copies it first."""
    workdir = tmp_path_factory.mktemp("quickstart_20_steps") / "run"
    launch([*TINY_QUICKSTART, "--config.num_train_steps=20", f"--workdir={workdir}"], check=True)
    return workdir
