"""The shipped specs install with the package: build a wheel, install it into a fresh virtual
environment and run ``toybench list`` from a folder outside the checkout.

The fresh environment borrows the dependencies (torch & co.) already installed for the interpreter
running the tests, through a ``.pth`` file that lists that interpreter's site-packages folders, and
the wheel goes in with ``--no-deps --no-index``: nothing is downloaded, and it works whether pytest
runs in a virtual environment (the README's set-up), in the system interpreter or with user site
packages. (``system_site_packages=True`` would give the *base* interpreter's packages, which in a
virtual environment are not the ones the tests run with.)
"""

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from toybench.resources import shipped_specs

REPO = Path(__file__).resolve().parents[1]


def _dependency_dirs() -> list[str]:
    """The site-packages folders the running interpreter imports its dependencies from."""
    dirs = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    return [p for p in dict.fromkeys(dirs) if Path(p).is_dir()]


def _fresh_venv(env_dir: Path) -> Path:
    """A virtual environment that sees this interpreter's installed packages; returns its python."""
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    # .pth lines are appended to sys.path after the venv's own site-packages, so the installed
    # wheel wins over any toybench (an editable install's hook is not run from a listed folder).
    (Path(purelib) / "_toybench_test_deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    return python


def test_dependency_dirs_are_this_interpreters():
    dirs = _dependency_dirs()
    assert sysconfig.get_path("purelib") in dirs
    import numpy

    assert any(Path(numpy.__file__).is_relative_to(d) for d in dirs)


@pytest.mark.slow
def test_wheel_ships_specs_and_cli_runs_outside_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
         str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = dist.glob("toybench-*.whl")
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in zipfile.ZipFile(wheel).namelist())
    env_dir = tmp_path / "venv"
    python = _fresh_venv(env_dir)
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, text=True,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run(
        [python, "-c", "import toybench, torch; print(toybench.__file__)"],
        cwd=outside, capture_output=True, text=True,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(env_dir)), (
        f"imported toybench from {where.stdout.strip()}, not from the wheel"
    )
    listed = subprocess.run(
        [env_dir / "bin" / "toybench", "list"], cwd=outside, capture_output=True, text=True,
    )
    assert listed.returncode == 0, listed.stderr
    for name in shipped_specs("generators"):
        assert name in listed.stdout
    shipped = set(shipped_specs("generators"))
    assert shipped >= {"dsprites", "dsprites-pairs", "toy-causal", "pendulum"}
