"""The repository is self-contained and stays clean: its docs link only to its own files, and what
the README's examples write is ignored by git."""

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target)
CODE_PATH = re.compile(r"`(\.\./[\w.\-/]+)`")  # `../shared/x.md`: a relative path named in code


def _git(*args: str) -> subprocess.CompletedProcess | None:
    """``git -C REPO ...``, or None when git or the checkout is missing (an unpacked sdist)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        return None
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


def _ignored(path: str) -> bool | None:
    done = _git("check-ignore", "-q", "--", path)
    if done is None:
        return None
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def _references(doc: Path):
    """``(target, kind)`` of every link and image, and of every code span naming a relative path
    that starts with ``../`` (a reference by name, though not a link; absolute and ``~/`` paths
    describe the user's machine and are left alone)."""
    text = doc.read_text(encoding="utf-8")
    text_without_code_blocks = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in LINK.findall(text_without_code_blocks):
        yield target, "link"
    for target in CODE_PATH.findall(text_without_code_blocks):
        yield target, "path"


def test_the_reference_finder_sees_links_images_and_outside_paths(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[a](docs/a.md#s) ![i](<img/b.png>) [w](https://x.org) see `../shared/D.md`, "
                   "`~/.cache/x` and `toybench/data.py`\n```\n[not](a-link.md)\n```\n")
    assert list(_references(doc)) == [
        ("docs/a.md#s", "link"), ("img/b.png", "link"), ("https://x.org", "link"),
        ("../shared/D.md", "path"),
    ]


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(REPO).as_posix() for d in DOCS])
def test_docs_link_only_to_files_in_the_repository(doc):
    assert DOCS[0].is_file() and len(DOCS) > 1
    problems = []
    for target, kind in _references(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        where = target.split("#")[0]
        resolved = (doc.parent / where).resolve()
        if not resolved.is_relative_to(REPO):
            problems.append(f"{kind} {target} is outside the repository")
        elif not resolved.exists():
            problems.append(f"{kind} {target} does not exist")
        elif _ignored(str(resolved.relative_to(REPO))):
            problems.append(f"{kind} {target} is ignored by git, so a clone lacks it")
    assert not problems, f"{doc.relative_to(REPO)}: " + "; ".join(problems)


def _readme_outputs() -> set[str]:
    """Files and folders the README's commands write, relative to where they run (the clone)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    outputs = set()
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line.split("#")[0])
            for i, word in enumerate(words[:-1]):
                if word in ("-o", "--out", "--json"):
                    outputs.add(words[i + 1])
            if "score" in words:  # `toybench score codes.npz`: the user's codes, kept beside
                outputs.update(w for w in words if w.endswith(".npz"))
            if "run" in words and "--out" not in words:
                outputs.add("runs/")  # toybench run's default --out
    return outputs


def test_readme_example_outputs_are_ignored_by_git():
    outputs = _readme_outputs()
    assert {"sheet.png", "scores.json", "pairs.npz", "codes.npz", "runs/"} <= outputs
    ci_venv = re.search(r"^VENV=(\S+)$", (REPO / ".ci" / "run").read_text(), flags=re.M)
    assert ci_venv, ".ci/run names its virtual environment in a VENV=... line"
    outputs.add(ci_venv.group(1).rstrip("/") + "/")
    if _ignored("README.md") is None:
        pytest.skip("not a git checkout")
    assert _ignored("README.md") is False
    not_ignored = sorted(path for path in outputs if not _ignored(path))
    assert not not_ignored, f"not in .gitignore: {', '.join(not_ignored)}"


def test_license_file_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the toybench authors\n")
    assert "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND" in text
