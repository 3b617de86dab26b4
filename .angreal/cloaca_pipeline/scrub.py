"""`scrub`: remove exactly what the pipeline made, never a tracked or a user's file.

What goes: the files generate recorded in its manifest (if they still carry
the generated header) and the directories it created (if nothing else is left
in them); the backend virtualenvs; the backend wheels; the pipeline's state
directory; the wheelhouse's wheels in dist/ (and dist/ once empty); caches
Python, pytest and ruff left; the dispatcher's setuptools build output; with
--deep, the whole cargo target directory. Before anything is deleted, it is
checked against `git ls-files`: a tracked path is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cloaca_pipeline import build, dist, project, render
from cloaca_pipeline.errors import PipelineError

#: Whole directories the pipeline owns outright.
OWNED_DIRECTORIES = (
    project.VENVS_DIR,
    project.STATE_DIR,
    project.DISPATCHER_DIR / "build",
    project.ROOT / ".pytest_cache",
    project.ROOT / ".ruff_cache",
)
#: Where Python leaves __pycache__ / *.egg-info we may remove.
CACHE_ROOTS = (
    project.ROOT / ".angreal",
    project.PYTHON_TESTS_DIR,
    project.DISPATCHER_DIR,
    project.EXAMPLES_DIR,
    project.BACKEND_DIR / "python",
)


def tracked_paths() -> set[Path]:
    """Every path git tracks in this tree (empty when this is not a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=project.ROOT, capture_output=True, check=False).stdout
    except OSError:
        return set()
    return {(project.ROOT / p.decode()).resolve() for p in out.split(b"\0") if p}


class Scrubber:
    """Deletes paths, refusing any that is tracked or holds a tracked file."""

    def __init__(self) -> None:
        self.tracked = tracked_paths()
        self.removed: list[str] = []

    def guard(self, path: Path) -> None:
        """Raise unless `path` is neither tracked nor holds a tracked file."""
        resolved = path.resolve()
        if resolved in self.tracked or any(resolved in t.parents for t in self.tracked):
            raise PipelineError(
                f"scrub stopped before deleting {project.relative(path)}: git tracks it (or "
                "something in it). Nothing tracked is ever deleted; check how it came to be "
                "tracked or listed in .cloaca-generated.json."
            )

    def remove_file(self, path: Path) -> None:
        """Delete a file (or symlink) if it exists."""
        if path.is_file() or path.is_symlink():
            self.guard(path)
            path.unlink()
            self.removed.append(project.relative(path))

    def remove_tree(self, path: Path) -> None:
        """Delete a directory and everything in it, or a file, if it exists."""
        if path.is_dir() and not path.is_symlink():
            self.guard(path)
            shutil.rmtree(path)
            self.removed.append(project.relative(path) + "/")
        else:
            self.remove_file(path)

    def remove_empty_directory(self, path: Path) -> None:
        """Delete a directory only if nothing is left in it."""
        if path.is_dir() and not any(path.iterdir()):
            self.guard(path)
            path.rmdir()
            self.removed.append(project.relative(path) + "/")


def scrub(deep: bool = False) -> list[str]:
    """Remove what the pipeline made; returns the removed paths (relative to the root)."""
    s = Scrubber()
    remove_generated_files(s)
    for directory in OWNED_DIRECTORIES:
        s.remove_tree(directory)
    for release in (True, False):
        for backend in project.facts().backends:
            for wheel in build.wheels_for(backend, build.wheel_dir(release)):
                s.remove_file(wheel)
        s.remove_empty_directory(build.wheel_dir(release))
    # dist/ may hold a user's own files too: only our wheels go, then dist/ if that emptied it.
    if dist.DIST_DIR.is_dir():
        for wheel in dist.our_wheels(dist.DIST_DIR):
            s.remove_file(wheel)
        s.remove_empty_directory(dist.DIST_DIR)
    for root in CACHE_ROOTS:
        if root.is_dir():
            for cache in sorted(list(root.rglob("__pycache__")) + list(root.rglob("*.egg-info"))):
                s.remove_tree(cache)
    if deep:
        s.remove_tree(project.CARGO_TARGET_DIR)
    return s.removed


def remove_generated_files(s: Scrubber) -> None:
    """Delete the files in generate's manifest that still carry its header, then its empty dirs."""
    manifest = render.load_manifest()
    for relative in sorted(manifest["files"]):
        path = project.ROOT / relative
        if path.is_file() and render.has_generated_header(path.read_text(encoding="utf-8", errors="replace")):
            s.remove_file(path)
    # Deepest first, so a parent is empty once its generated children are gone.
    for relative in sorted(manifest["directories"], key=lambda p: p.count("/"), reverse=True):
        s.remove_empty_directory(project.ROOT / relative)
    s.remove_file(project.GENERATED_MANIFEST)
