"""The README's two opening commands are what CI runs; keep them and .ci/run in sync. Every `mmemb`
command the README shows parses."""

import os
import re
import shlex
import sys

import pytest
from conftest import REPO

from mmemb.cli import LIGHTNING_COMMANDS, build_parser


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(text: str) -> list[str]:
    lines = [line.strip() for block in _bash_blocks(text) for line in block.replace("\\\n", " ").splitlines()]
    return [part.strip() for line in lines for part in line.split("&&")]


def test_readme_opens_with_the_two_commands():
    blocks = _bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    quickstart, tests = blocks[0].strip(), blocks[1].strip()
    assert "\n" not in quickstart and "\n" not in tests  # one command each
    assert "pip install -e ." in quickstart
    assert re.search(r"(train\.py|mmemb) fit --config configs/quickstart\.yaml", quickstart)
    assert "evaluate.py" in quickstart or "mmemb eval" in quickstart
    assert (REPO / "configs" / "quickstart.yaml").exists()


def test_ci_runs_the_readme_install_and_test_command():
    blocks = _bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    steps = [s.strip() for s in blocks[1].strip().split("&&")]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    install = next(s for s in steps if s.startswith("pip install"))
    test = next(s for s in steps if "pytest" in s)
    assert install in ci_lines
    assert test in ci_lines
    assert "python3 -m venv .venv" in ci_lines


def test_readme_mmemb_commands_parse(monkeypatch, capsys):
    """`mmemb data` and `mmemb eval` commands parse with their parsers; `mmemb fit|validate|test|predict`
    commands parse with the LightningCLI (``--print_config``: parse, print, build nothing)."""
    from mmemb.cli.eval import build_parser as eval_parser
    from mmemb.cli.eval import with_command
    from mmemb.lit.cli import main as lightning_main

    mmemb_cmds = [c for c in _commands((REPO / "README.md").read_text(encoding="utf-8")) if c.startswith("mmemb ")]
    assert mmemb_cmds, "the README shows mmemb commands"
    monkeypatch.chdir(REPO)  # config paths are relative to the repository
    monkeypatch.setattr(sys, "argv", ["mmemb"])
    for cmd in mmemb_cmds:
        argv = shlex.split(cmd.split(" #")[0])[1:]
        if argv and argv[0] in LIGHTNING_COMMANDS:
            if "--help" in argv or "-h" in argv:
                continue
            with pytest.raises(SystemExit) as info:
                lightning_main([*argv, "--print_config"])
            assert info.value.code in (0, None), cmd
        elif argv and argv[0] == "eval":
            if "--help" not in argv and "-h" not in argv:
                eval_parser().parse_args(with_command(argv[1:]))  # exits (fails the test) on a bad option
        else:
            build_parser().parse_args(argv)  # exits (fails the test) on an unknown command or option
    capsys.readouterr()
    assert os.getcwd() == str(REPO)
