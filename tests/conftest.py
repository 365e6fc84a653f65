"""Session-wide test settings."""

import os

# Every test compiles from scratch: launch.py's persistent compilation cache stays off in the
# subprocesses the tests start (they inherit this environment), so no test depends on another.
os.environ["CNNJAX_COMPILATION_CACHE"] = "off"
