"""The README's examples run (lucidrains' test_readme): its Python blocks execute, its two
commands are the ones .ci/run uses, and every `toybench ...` line names a real command."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from toybench.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    first, second = _blocks("bash")[:2]
    assert first.strip().startswith("pip install -e .")
    assert "toybench run --model csvae --corr 0.2" in first
    test_command = second.strip()
    ci = (REPO / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_readme_python_examples_run(tmp_path):
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def test_readme_toybench_commands_exist_with_their_options():
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if "toybench " not in line:
                continue
            args = shlex.split(line[line.index("toybench ") :])[1:]
            command = main.get_command(None, args[0])
            assert command is not None, f"README names unknown command {args[0]!r}"
            documented = {p for param in command.params for p in param.opts}
            for arg in args[1:]:
                if arg.startswith("-"):
                    assert arg.split("=")[0] in documented, f"{args[0]} has no option {arg}"


@pytest.mark.slow
def test_readme_using_it_block_runs_verbatim(tmp_path):
    """The "Using it" commands, in order, in an empty folder: `toybench encode` of the quick
    β-VAE run feeds `toybench score`, exactly as written."""
    block = next(b for b in _blocks("bash") if "toybench score codes.npz" in b)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "scores.json").is_file() and (tmp_path / "sheet.png").is_file()
