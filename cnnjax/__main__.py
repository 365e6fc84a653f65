"""`python -m cnnjax`: the command line (`cnnjax.cli`), the same as the installed `cnnjax`
command and the checkout's `python launch.py`."""

from cnnjax import cli

if __name__ == "__main__":
    cli.entry()
