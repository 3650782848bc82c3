"""`kseg COMMAND --help`: a help line and the default of every option, for every command."""

import re

import pytest

from kseg import cli


def _subcommands():
    parser = cli.build_parser()
    return next(action for action in parser._actions if action.dest == "command").choices


def _option_entries(help_text):
    """The help text of each option, by its first option string (e.g. "--out")."""
    section = help_text.split("options:", 1)[1]
    entries = re.split(r"\n(?=  -)", section)
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries if entry}


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_help_of_every_command_names_each_option_and_its_default(command):
    parser = _subcommands()[command]
    entries = _option_entries(parser.format_help())
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options and any(a.dest == "verbose" for a in options)
    for action in options:
        entry = entries[action.option_strings[0]]
        assert action.help, f"kseg {command} {action.option_strings[0]} has no help"
        if action.required:
            assert "default" not in entry  # a required option has no default to show
        else:
            assert "(default: " in entry, entry


def test_help_shows_defaults_as_they_are_used():
    entries = _option_entries(_subcommands()["predict"].format_help())
    assert entries["--out"].endswith("(default: predictions)")
    assert entries["--scales"].endswith("(default: 1)")
    assert entries["--crf-iterations"].endswith("(default: 10)")
    train = _option_entries(_subcommands()["train"].format_help())
    # Recipe fields default to None, which the help text spells out as the recipe's value.
    assert "None: the recipe's" in train["--learning-rate"]
    assert train["--learning-rate"].endswith("(default: None)")
    assert train["--recipe"].endswith("(default: finetune)")
