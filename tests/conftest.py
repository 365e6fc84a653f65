"""Session-wide test settings."""

import os
import tempfile

# The runs that tests start through launch.py (subprocesses inheriting this environment) share
# a persistent compilation cache private to this test process, for every compilation however
# short: a killed-and-resumed run, or the same tiny config in the next test, reuses the
# identical executable instead of compiling it again. Nothing is read from the user's ~/.cache,
# and each pytest-xdist worker has its own directory, so no two workers write one cache.
os.environ["CNNJAX_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="cnnjax-test-xla-")
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
