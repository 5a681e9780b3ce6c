import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def readme_commands():
    """The shell commands in the README's first code block, in order."""
    block = re.search(r"```(?:bash|sh)\n(.*?)```", read("README.md"), re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_run_and_test_commands():
    cmds = readme_commands()
    assert len(cmds) == 2, cmds
    assert "python -m onestory_lab demo" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci_lines = [line.strip() for line in read(".ci/run").splitlines()]
    assert readme_commands()[1].strip() in ci_lines
