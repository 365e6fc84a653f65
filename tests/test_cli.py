"""The command line's mode choices are the mode table's (cli cannot import the modes before the
flags parse: they import JAX)."""

from cnnjax import cli, modes


def test_the_mode_flag_offers_exactly_the_modes_of_the_table():
    assert sorted(cli.MODES) == sorted(modes.MODES)


def test_flag_suggestions_come_from_the_defined_flags():
    names = cli._own_flags()
    assert "compilation_cache" in names and "experiment" in names
    assert "verbosity" not in names  # absl's own flags are not suggested.
