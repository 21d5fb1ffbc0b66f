"""Collect ``benchmarks/bench_*.py`` as test modules, so ``pytest benchmarks/`` runs them all.

The benchmarks use pytest-benchmark; they sit outside ``testpaths`` so the test suite stays fast.
"""

from __future__ import annotations

import pytest


def pytest_collect_file(file_path, parent):
    # files named on the command line are collected by pytest itself; do not collect them twice
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        return pytest.Module.from_parent(parent, path=file_path)
    return None
