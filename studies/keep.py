"""What the study drivers share: run one spec, keep its small files, commit them.

`run_and_keep` is the step of `studies/convergence.py` and `studies/leaderboards.py`: execute a
`toybench.rundir.RunSpec` into a work folder (checkpoints and all), then copy the files worth
committing into a kept folder and, if asked, commit that folder at once, so an interrupted
driver loses at most the run in progress.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(main) -> int:
    """``main()``'s exit code, a `toybench.errors.ToybenchError` (a bad ``--seeds`` or ``--corr``)
    printed as one ``error:`` line on stderr with exit code 2, as toybench's own CLI does."""
    import sys

    from toybench.errors import ToybenchError

    try:
        return main()
    except ToybenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run_and_keep(spec, work: Path, kept: Path, names: tuple[str, ...], *, commit: bool,
                 message: str, note: str = "", **execute_kwargs) -> bool:
    """``toybench.runs.execute(spec, work, ...)`` (a started run resumes unless
    ``execute_kwargs`` says otherwise), then ``names`` copied from the run folder to ``kept``
    and, with ``commit``, committed with ``message``. Returns False (and prints the one-line
    error) when the run fails; nothing is kept then."""
    from toybench.errors import ToybenchError
    from toybench.rundir import RunDir
    from toybench.runs import execute

    run_dir = RunDir.of(spec, work)
    state = run_dir.state()
    print(f"== {spec.protocol} {spec.name} ({state}{note})", flush=True)
    execute_kwargs.setdefault("resume", state == "started")
    try:
        execute(spec, work, plots=False, progress=False,
                echo=lambda line: print(line, flush=True), **execute_kwargs)
    except ToybenchError as err:
        print(f"FAILED {spec.name}: {err}", flush=True)
        return False
    kept.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(run_dir.path / name, kept / name)
    if commit:
        git_commit(kept, message)
    return True


def git_commit(path: Path, message: str, tries: int = 20) -> None:
    """``git add`` + ``git commit -- path``, retried while another git command holds the index
    (a busy repository must not stop a driver; the files stay for a later commit)."""
    for _ in range(tries):
        added = subprocess.run(["git", "add", str(path)], cwd=ROOT, capture_output=True)
        done = added.returncode == 0 and subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)], cwd=ROOT,
            capture_output=True).returncode == 0
        if done:
            return
        time.sleep(15)
    print(f"warning: could not commit {path}; commit it by hand", flush=True)
