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


def test_eval_is_a_command_with_its_own_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: paced eval [-h] --model DIR_OR_RUN --data NAME_OR_FILE")
    assert "--backend {hf,vllm}" in out and "--samples K" in out and "--json" in out
