"""cnnjax launcher for the checkout: the same command as the installed `cnnjax` and
`python -m cnnjax` (the command line is `cnnjax.cli`).

python launch.py --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
python launch.py --experiment=path/to/my_exp.py[:ARG]
python launch.py --list
"""

from cnnjax import cli

if __name__ == "__main__":
    cli.entry()
