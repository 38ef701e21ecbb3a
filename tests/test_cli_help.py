"""`ftkit <command> --help` and `-h`: every command prints its own usage and exits 0, whatever else is given."""

from __future__ import annotations

import sys

import pytest

from ftkit import cli

# What each command's help must name: its options (or config groups, for train's Hydra help) and an example.
NAMES = {
    "train": ["== Config groups", "launcher: ddp", "peft: dora, lora, none, qlora", "ftkit train --cfg job"],
    "cv": ["usage: ftkit cv", "folds=<k>", "key=value", "hydra.run.dir=<dir>", "ftkit cv folds=5"],
    "eval": ["usage: ftkit eval", "run=<run dir>", "out=<dir>", "key=value", "ftkit eval run=outputs/"],
    "predict": ["usage: ftkit predict", "run=<run dir>", "input=<file>|-", "output=<file>|-", "| ftkit predict run="],
    "export": ["usage: ftkit export", "run=<run dir>", "out=<dir>", "merge=true|false", "ftkit export run=outputs/"],
    "serve": ["usage: ftkit serve", "--run", "--port", "--api-key", "ftkit serve --run outputs/"],
}
# Beside --help, words that would fail the command if it ran: help must win over them. (train's help is Hydra's,
# which composes the config it shows, so its words must compose: a value check() refuses, not an unknown group.)
BESIDE = {
    "train": ["peft.r=4", "peft.dropout=1.5", "launcher=ddp", "launcher.num_processes=64"],
    "cv": ["folds=1", "-m", "early_stopping.patience=2"],
    "eval": ["run=/no/such/run", "--no-such-flag", "peft.r=4"],
    "predict": ["input=/no/such.jsonl", "-x"],
    "export": ["merge=maybe", "out=/no/such/dir"],
    "serve": ["--port", "99999", "--run", "/no/such/run"],
}


@pytest.fixture(autouse=True)
def keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """train hands sys.argv to Hydra; put it back after each test."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def help_output(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Run `ftkit <args>` in this process; the exit status must be 0 (argparse exits, the others return)."""
    try:
        cli.main(args)
    except SystemExit as stop:
        assert stop.code in (0, None), capsys.readouterr()
    out, err = capsys.readouterr()
    assert "error" not in err.lower(), err
    return out


def test_every_command_has_help_names():
    assert set(NAMES) == set(cli.COMMANDS) == set(BESIDE)


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_prints_the_commands_usage_and_exits_0(command, flag, capsys):
    out = help_output(capsys, [command, flag])
    for name in NAMES[command]:
        assert name in out, (name, out)


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_wins_over_the_other_words(command, capsys):
    out = help_output(capsys, [command, *BESIDE[command], "--help"])
    assert NAMES[command][0] in out


@pytest.mark.parametrize("command", ["cv", "eval", "predict", "export"])
def test_usage_names_every_option_the_command_parses(command, monkeypatch, capsys):
    """The usage and the parser agree: each option parse_command_options is given appears as name=."""
    seen = {}

    def record(name: str, args: list[str], defaults: dict) -> tuple[dict, list[str]]:
        seen.update(defaults)
        raise SystemExit(0)  # stop before anything loads: only the option names are wanted

    module = __import__(cli.COMMANDS[command].split(":")[0], fromlist=["parse_command_options"])
    monkeypatch.setattr(module, "parse_command_options", record)
    help_output(capsys, [command])
    assert seen, "the command did not call parse_command_options"
    out = help_output(capsys, [command, "--help"])
    for option in seen:
        assert f"{option}=" in out.split("examples:")[0], (option, out)


def test_a_flag_that_is_not_help_is_refused_pointing_at_help(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", "--verbose"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "takes no flag '--verbose'" in err and "ftkit eval --help" in err


def test_the_console_script_prints_help_and_exits_0(run_ftkit):
    result = run_ftkit("predict", "run=/no/such/run", "-h")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in NAMES["predict"]:
        assert name in result.stdout
