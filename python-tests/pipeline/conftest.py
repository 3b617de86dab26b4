"""Fixtures for testing the angreal tasks themselves.

These tests run once, in the development interpreter (the one angreal runs
in), by `angreal cloaca test`. Most work on a temporary copy of the tree made
into its own git repository, so generate/scrub/check can be run, broken and
inspected without touching the real checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The backends, from the single source of truth ([tool.cloaca] in pyproject.toml).
BACKENDS = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cloaca"]["backends"])
#: The angreal that belongs to this interpreter (not a shim), so tests that
#: narrow PATH can still start it.
ANGREAL = Path(sys.executable).parent / "angreal"


#: The pipeline suite runs on pytest-xdist workers; the tests that build, install
#: or render in the real checkout (its Cargo.toml is rendered for one backend at
#: a time, its virtualenvs are shared) take this mark: they run alone afterwards,
#: one after the other (`angreal cloaca test` runs the serial tests on their own).
IN_CHECKOUT = pytest.mark.serial


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` and return its stdout."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def source_files() -> list[str]:
    """The files of the real tree that a clone would have: tracked plus new, not ignored."""
    out = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def base_env(**overrides: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("CLOACA_BACKEND", "CLOACA_TEST_POSTGRES_URL", "VIRTUAL_ENV")
    }
    env["ANGREAL_NO_AUTO_COMPLETION"] = "1"
    env.update(overrides)
    return env


def run_angreal(cwd: Path, *args: str, env: dict | None = None, timeout: float = 300):
    """Run `angreal <args>` in `cwd`; returns CompletedProcess with text output."""
    return subprocess.run(
        [str(ANGREAL), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env if env is not None else base_env(),
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tree_template(tmp_path_factory) -> Path:
    """The project's source files as a git repository with one commit, made once per session.

    Only `tree` reads it: git init, add and commit cost a few times what a
    copy of the finished repository does, and most tests here start from one.
    """
    template = tmp_path_factory.mktemp("template") / "tree"
    for relative in source_files():
        target = template / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target)
    git(template, "init", "-q")
    git(template, "add", "-A")
    git(template, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    return template


@pytest.fixture
def tree(tree_template, tmp_path) -> Path:
    """A copy of the project's source files as a fresh git repository with one commit.

    A test's own copy of tree_template (its .git included), so what one test
    breaks no other test sees.
    """
    copy = tmp_path / "tree"
    shutil.copytree(tree_template, copy, symlinks=True)
    return copy


def copy_installed_builds(tree: Path) -> None:
    """Link the checkout's virtualenvs into `tree` and copy the debug builds they were installed from.

    The virtualenvs are linked (the tests only read them); the build records
    and wheels are copied so the pipeline can tell whether the installed
    extension is fresh.
    """
    (tree / ".venvs").symlink_to(ROOT / ".venvs", target_is_directory=True)
    shutil.copytree(ROOT / ".cloaca-cache", tree / ".cloaca-cache")
    wheels = Path("cloaca-backend", "target", "wheels")
    shutil.copytree(ROOT / wheels, tree / wheels)


@pytest.fixture
def built_tree(tree) -> Path:
    """`tree`, plus the real checkout's installed backends, for check's runtime part (see copy_installed_builds)."""
    missing = [b for b in BACKENDS if not (ROOT / ".venvs" / b / "bin" / "python").exists()]
    if missing:
        pytest.fail(
            f"backends not installed in {ROOT / '.venvs'}: {missing}; the pipeline suite "
            "runs after the backend suites in `angreal cloaca test`, which install them."
        )
    copy_installed_builds(tree)
    return tree


def edit(path: Path, old: str, new: str) -> None:
    """Replace `old` (which must occur) with `new` in a file."""
    text = path.read_text()
    assert old in text, f"{old!r} not found in {path}"
    path.write_text(text.replace(old, new))
