"""The shipped specs install with the package: build a wheel, install it into a fresh virtual
environment and run ``toybench list`` from a folder outside the checkout."""

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from toybench.resources import shipped_specs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_specs_and_cli_runs_outside_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
         str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = dist.glob("toybench-*.whl")
    env_dir = tmp_path / "venv"
    # System site-packages give the venv torch & co. without a download; the wheel itself goes in
    # the venv's own site-packages, which comes first on sys.path.
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [python, "-c", "import toybench, sys; print(toybench.__file__)"],
        cwd=outside, check=True, capture_output=True, text=True,
    ).stdout.strip()
    assert str(env_dir) in where, f"imported toybench from {where}, not from the wheel"
    listed = subprocess.run(
        [env_dir / "bin" / "toybench", "list"], cwd=outside, capture_output=True, text=True,
    )
    assert listed.returncode == 0, listed.stderr
    for name in shipped_specs("generators"):
        assert name in listed.stdout
    shipped = set(shipped_specs("generators"))
    assert shipped >= {"dsprites", "dsprites-pairs", "toy-causal", "pendulum"}
