"""cnnjax launcher: flags in, one call out (the command line is `cnnjax.cli`).

python launch.py --experiment=NAME [--workdir=DIR] [--mode=MODE] [--config.KEY=VALUE ...]
python launch.py --list
"""

from absl import app

from cnnjax import cli

if __name__ == "__main__":
    app.run(cli.main, flags_parser=cli.parse_flags)
