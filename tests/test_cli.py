import importlib

import pytest

from kp3d import cli


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_has_the_interface(name: str) -> None:
    module = importlib.import_module(cli.COMMANDS[name][0])
    assert callable(module.add_arguments) and callable(module.run)


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2


def test_no_arguments_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "usage: kp3d" in out and all(name in out for name in cli.COMMANDS)


def test_a_mistyped_flag_gets_the_sub_command_usage_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["data", "info", "somewhere", "--formt", "synth"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: kp3d data" in err
    assert "unrecognized arguments: --formt synth; did you mean --format?" in err


def test_a_mistyped_command_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["evalute", "--run", "r"])
    assert e.value.code == 2
    assert "did you mean evaluate?" in capsys.readouterr().err


def test_nothing_close_suggests_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["data", "info", "somewhere", "--zzzzzz"])
    assert "did you mean" not in capsys.readouterr().err
