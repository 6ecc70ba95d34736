"""The `paced` command line's own options: --version, and help for every command group."""

from __future__ import annotations

import importlib.metadata

import pytest

from services.cli import main


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"paced {importlib.metadata.version('paced')}\n"


def test_models_help_lists_its_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "--help"])
    assert exit_info.value.code == 0
    assert "import-gguf" in capsys.readouterr().out


def test_models_without_a_command_says_so(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: models_command" in capsys.readouterr().err
