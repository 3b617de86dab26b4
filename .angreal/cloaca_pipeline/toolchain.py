"""Find the external programs the pipeline runs, with a clear error when one is missing."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cloaca_pipeline import project
from cloaca_pipeline.errors import ChecksFailed, PipelineError

#: program -> what to do when it is missing.
INSTALL_ADVICE = {
    "cargo": "Install the Rust toolchain (https://rustup.rs, or your system's rustup) and "
    "make sure ~/.cargo/bin is on PATH.",
    "maturin": "Install the development tools from the top-level pyproject.toml "
    "(`pip install .` in the project root) into the Python that runs angreal.",
}


def require_program(name: str) -> Path:
    """The path of `name` on PATH, or a PipelineError that says how to install it."""
    found = shutil.which(name)
    if found is None:
        raise PipelineError(
            f"`{name}` was not found on PATH ({os.environ.get('PATH', '')!r}), and building "
            f"a cloaca backend needs it. {INSTALL_ADVICE.get(name, '')}"
        )
    return Path(found)


def run(command: list, *, cwd: Path | None = None, env: dict | None = None, what: str, advice: str) -> None:
    """Run a command, streaming its output; raise a PipelineError if it fails."""
    try:
        result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, check=False)
    except OSError as exc:
        raise PipelineError(f"Could not start {what} ({command[0]}): {exc}. {advice}") from exc
    if result.returncode != 0:
        raise ChecksFailed(f"{what} failed (exit status {result.returncode}; its output is above). {advice}")


def capture(command: list, *, cwd: Path | None = None, env: dict | None = None) -> str:
    """Run a command and return its stdout, or '' if it cannot run."""
    try:
        return subprocess.run(
            [str(c) for c in command], cwd=cwd, env=env, check=False, capture_output=True, text=True
        ).stdout
    except OSError:
        return ""


def tool_versions() -> dict:
    """The versions of what compiles a wheel: interpreter, rustc, maturin."""
    try:
        maturin = importlib.metadata.version("maturin")
    except importlib.metadata.PackageNotFoundError:
        maturin = None
    return {
        "python": f"{project.PYTHON} {sys.version}",
        "maturin": maturin,
        "rustc": capture(["rustc", "--version"]).strip() or None,
    }


def build_environment() -> dict:
    """The environment every cargo/maturin invocation runs in.

    One target directory and one interpreter for every build: pyo3's build
    script fingerprints PYO3_PYTHON, so a varying interpreter would recompile.
    """
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(project.CARGO_TARGET_DIR)
    env["PYO3_PYTHON"] = str(project.PYTHON)
    env.pop("VIRTUAL_ENV", None)
    env.pop("CONDA_PREFIX", None)
    return env
