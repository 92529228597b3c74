"""The README's two opening commands are what CI runs; keep them and .ci/run in sync."""

import re
import shlex

from conftest import REPO

from mmemb.cli import build_parser


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_readme_opens_with_the_two_commands():
    blocks = _bash_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    quickstart, tests = blocks[0].strip(), blocks[1].strip()
    assert "\n" not in quickstart and "\n" not in tests  # one command each
    assert "pip install -e ." in quickstart and "train.py fit --config configs/quickstart.yaml" in quickstart
    assert "evaluate.py" in quickstart
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


def test_readme_mmemb_commands_parse():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = [line.strip() for block in _bash_blocks(text) for line in block.replace("\\\n", " ").splitlines()]
    mmemb_cmds = [c for c in commands if c.startswith("mmemb ")]
    assert mmemb_cmds, "the README shows mmemb commands"
    for cmd in mmemb_cmds:
        argv = shlex.split(cmd.split("#")[0])[1:]
        parser.parse_args(argv)  # exits (fails the test) on an unknown command or option
