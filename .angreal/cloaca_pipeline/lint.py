"""`lint`: rustfmt and clippy on the crate (once per backend feature), ruff on the Python.

Every tool runs even when an earlier one failed, so one run shows every
finding; each failure is then named with the command that fixes it (or shows
the findings again). clippy runs with `-D warnings` on all targets, tests
included, in a target directory of its own (cloaca-backend/target/lint): its
check-mode artifacts would otherwise sit beside the wheels' and the unit
tests' builds, and it gets the same PYO3_PYTHON as the wheel builds so pyo3's
build script does not rerun between backends.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline import project, render, toolchain
from cloaca_pipeline.errors import PipelineError

#: clippy's check-mode build of the crate, apart from the wheels and unit tests.
LINT_TARGET_DIR = project.CARGO_TARGET_DIR / "lint"
MANIFEST = project.BACKEND_DIR / "Cargo.toml"

#: cargo subcommand -> how to install it when `cargo <sub> --version` fails.
CARGO_COMPONENTS = {
    "fmt": "rustup component add rustfmt",
    "clippy": "rustup component add clippy",
}


@dataclass
class LintResult:
    """One tool's run: its name, whether it passed, what to run to fix it, how long it took."""

    name: str
    passed: bool
    fix: str
    seconds: float


def require_tools() -> None:
    """Fail with exit 2 before anything runs when cargo, rustfmt, clippy or ruff is missing."""
    if shutil.which("cargo") is None:
        raise PipelineError(
            "`cargo` was not found on PATH, and lint runs `cargo fmt` and `cargo clippy`. "
            "Install the Rust toolchain (https://rustup.rs) and make sure ~/.cargo/bin is on PATH."
        )
    for sub, install in CARGO_COMPONENTS.items():
        probe = subprocess.run(["cargo", sub, "--version"], capture_output=True, check=False)
        if probe.returncode != 0:
            raise PipelineError(f"`cargo {sub}` is not installed, and lint runs it. Install it with `{install}`.")
    if shutil.which("ruff") is None:
        raise PipelineError(
            "`ruff` was not found on PATH, and lint runs it on the Python. Install the "
            "development tools from the top-level pyproject.toml (`pip install .` in the project root)."
        )


def run_tool(name: str, command: list, fix: str, *, cwd: Path, env: dict | None = None) -> LintResult:
    """Run one lint command with its output streamed; passed means exit status 0."""
    print(f"\n==> {name}: {' '.join(str(c) for c in command)}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, check=False)
    except OSError as exc:
        raise PipelineError(f"could not start {name} ({command[0]}): {exc}.") from exc
    return LintResult(name, done.returncode == 0, fix, time.monotonic() - started)


def rustfmt() -> LintResult:
    """`cargo fmt --check` on the crate (its rustfmt.toml sets the style)."""
    # cargo needs a Cargo.toml, and that file is rendered; any backend's will do for formatting.
    render.generate(project.facts().backends[0])
    return run_tool(
        "cargo fmt",
        ["cargo", "fmt", "--check", "--manifest-path", MANIFEST],
        f"run `cargo fmt --manifest-path {project.relative(MANIFEST)}`",
        cwd=project.BACKEND_DIR,
    )


def clippy_command(backend: str) -> list:
    """clippy on every target (tests included) with `backend`'s feature, warnings denied."""
    return [
        "cargo",
        "clippy",
        "--manifest-path",
        MANIFEST,
        "--all-targets",
        "--features",
        backend,
        "--",
        "-D",
        "warnings",
    ]


def clippy_environment() -> dict:
    """The wheel builds' environment (one interpreter for pyo3), with lint's own target directory."""
    env = toolchain.build_environment()
    env["CARGO_TARGET_DIR"] = str(LINT_TARGET_DIR)
    return env


def clippy(backend: str) -> LintResult:
    """clippy for one backend feature, on the Cargo.toml rendered for that backend."""
    render.generate(backend)
    command = clippy_command(backend)
    return run_tool(
        f"cargo clippy ({backend})",
        command,
        "fix what it reports above in cloaca-backend/src/ (`cargo clippy --fix --allow-dirty "
        f"--features {backend} --manifest-path {project.relative(MANIFEST)}` fixes some warnings), then lint again",
        cwd=project.BACKEND_DIR,
        env=clippy_environment(),
    )


def ruff_check() -> LintResult:
    """`ruff check` on the repository's Python, with [tool.ruff] of pyproject.toml."""
    return run_tool(
        "ruff check",
        ["ruff", "check", "."],
        "run `ruff check --fix .` and fix what it leaves by hand",
        cwd=project.ROOT,
    )


def ruff_format() -> LintResult:
    """`ruff format --check` on the repository's Python."""
    return run_tool("ruff format", ["ruff", "format", "--check", "."], "run `ruff format .`", cwd=project.ROOT)


def run_all() -> list[LintResult]:
    """rustfmt, clippy once per backend in [tool.cloaca] backends, ruff check, ruff format."""
    results = [rustfmt()]
    results += [clippy(backend) for backend in project.facts().backends]
    results += [ruff_check(), ruff_format()]
    return results


def print_summary(results: list[LintResult]) -> None:
    """One line per tool: passed or FAILED, and its time."""
    print("\nlint summary:")
    for r in results:
        print(f"  {'passed' if r.passed else 'FAILED':<7} {r.name} ({r.seconds:.1f}s)")
    print(flush=True)


def failure_message(failed: list[LintResult]) -> str:
    """Every failed tool by name, each with what to run to fix it."""
    return "lint failed: " + "; ".join(f"{r.name}: {r.fix}" for r in failed) + "."
