"""`test`: run each backend's pytest suite in its own virtualenv, and the pipeline's own tests.

A suite is: provide the database (first, so a bad URL fails before any
compiling), build the wheel (skipped when unchanged), bring the virtualenv up
to date, run pytest. Each step is timed for the summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from cloaca_pipeline import build, databases, project, toolchain, venvs
from cloaca_pipeline.errors import PipelineError, print_paragraph

#: pytest's exit status when no test was selected (e.g. by -k).
PYTEST_NO_TESTS = 5
#: pytest's exit status for a usage error (bad option or -k expression).
PYTEST_USAGE_ERROR = 4
#: pytest-xdist workers a backend suite runs on. Its tests mostly wait (lease
#: expiries, polling, scenario processes: pytest used a quarter of one core),
#: so more workers than a two-core machine's cores still pay: 4 took the sqlite
#: suite from 237 s to 76 s. Each worker has its own harness database (conftest.py).
PYTEST_WORKERS = 4
#: pytest-xdist workers of the pipeline suite. Its tests mostly compute (check's
#: stubtest and mypy, builds), so one per core.
PIPELINE_WORKERS = 2
#: The tests that must run alone, after the workers' share: they act on what
#: every worker uses (the PostgreSQL server, its roles; the real checkout, in the
#: pipeline suite). python-tests/conftest.py and pipeline/conftest.py mark them.
SERIAL_MARK = "serial"


@dataclass
class SuiteResult:
    """What one suite did, for the summary."""

    name: str
    status: str = "not run"  # passed | failed | no tests | skipped
    counts: dict = field(default_factory=lambda: {"passed": 0, "failed": 0, "skipped": 0})
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when any step of the suite failed."""
        return self.status == "failed"


def pytest_arguments(k: str | None, pytest_args: str | None) -> list[str]:
    """The user's -k expression and extra pytest arguments, as an argument list."""
    args = []
    if k:
        args += ["-k", k]
    if pytest_args:
        try:
            args += shlex.split(pytest_args)
        except ValueError as exc:
            raise PipelineError(
                f"--pytest-args={pytest_args!r} cannot be split into arguments: {exc}. "
                'Quote it as a whole, e.g. --pytest-args="-x --maxfail=2".'
            ) from exc
    return args


def run_pytest(result: SuiteResult, python: Path, targets: list, extra: list, env: dict, phase: str = "pytest") -> None:
    """Run pytest with `python`; fill in `result` from its exit status and JUnit report.

    A suite may run pytest more than once (phases): the counts add up, and the
    suite has passed when no phase failed and at least one ran a test.
    """
    with tempfile.TemporaryDirectory(prefix="cloaca-pytest-") as tmp:
        report = Path(tmp) / "report.xml"
        command = [
            str(python),
            "-m",
            "pytest",
            *map(str, targets),
            f"--junitxml={report}",
            "-o",
            "junit_family=xunit2",
            *extra,
        ]
        started = time.monotonic()
        completed = subprocess.run(command, cwd=project.ROOT, env=env, check=False)
        result.timings[phase] = time.monotonic() - started
        for key, count in junit_counts(report).items():
            result.counts[key] += count
    if completed.returncode == PYTEST_USAGE_ERROR:
        raise PipelineError(
            f"pytest rejected its arguments (exit {PYTEST_USAGE_ERROR}; its message is above): "
            f"{' '.join(extra) or '(none given)'}. Fix -k / --pytest-args and run again."
        )
    if result.status == "failed":
        pass  # an earlier step (the Rust tests, a phase) failed; keep that verdict
    elif completed.returncode == 0:
        result.status = "passed"
    elif completed.returncode == PYTEST_NO_TESTS:
        if result.status != "passed":  # an earlier phase's tests still count
            result.status = "no tests"
    else:
        result.status = "failed"
        result.notes.append(f"{phase}: pytest exit status {completed.returncode}")


def run_rust_tests(result: SuiteResult, backend: str, database_url: str) -> None:
    """`cargo test --lib` with the backend's feature: the engine's Rust unit tests.

    The store tests use the same real database as the Python suite.
    """
    toolchain.require_program("cargo")
    started = time.monotonic()
    env = toolchain.build_environment()
    env["CARGO_TARGET_DIR"] = str(project.UNIT_TEST_TARGET_DIR)
    env["CLOACA_TEST_DATABASE_URL"] = database_url
    # The engine tests make a SQLite file per test in the temporary
    # directory and leave it there: give them one that goes afterwards.
    manifest = str(project.BACKEND_DIR / "Cargo.toml")
    with tempfile.TemporaryDirectory(prefix="cloaca-rust-tests-") as scratch:
        env["TMPDIR"] = scratch
        completed = subprocess.run(
            ["cargo", "test", "--lib", "--features", backend, "--manifest-path", manifest],
            cwd=project.BACKEND_DIR,
            env=env,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    print(completed.stdout, end="", flush=True)
    result.timings["rust"] = time.monotonic() - started
    counts = cargo_test_counts(completed.stdout)
    for key in ("passed", "failed"):
        result.counts[key] += counts[key]
    result.notes.append(f"rust: {counts['passed']} passed, {counts['failed']} failed")
    if completed.returncode != 0:
        result.status = "failed"
        result.notes.append(f"cargo test exit status {completed.returncode}")


def cargo_test_counts(output: str) -> dict:
    """passed/failed totals from cargo test's "test result:" lines."""
    counts = {"passed": 0, "failed": 0}
    for match in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", output):
        counts["passed"] += int(match.group(1))
        counts["failed"] += int(match.group(2))
    return counts


def junit_counts(report: Path) -> dict:
    """passed/failed/skipped counts from a pytest JUnit XML report."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        root = ET.parse(report).getroot()
    except (OSError, ET.ParseError):
        return counts
    for suite in root.iter("testsuite"):
        tests = int(suite.get("tests", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped = int(suite.get("skipped", 0))
        counts["failed"] += failed
        counts["skipped"] += skipped
        counts["passed"] += tests - failed - skipped
    return counts


def running_in_ci() -> bool:
    """True when the CI environment variable says so (CI=false or CI=0 does not)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_environment(**extra: str) -> dict:
    """The environment pytest runs in: ours, minus anything that would pick a backend."""
    env = dict(os.environ)
    env.pop("CLOACA_BACKEND", None)
    env.pop("VIRTUAL_ENV", None)
    # An outer pytest-xdist worker's (the pipeline suite runs `angreal cloaca
    # test`): a pytest run without workers must not take itself for one.
    for name in [n for n in env if n.startswith("PYTEST_XDIST_")]:
        del env[name]
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def pytest_phases(extra: list, workers: int) -> list[tuple[str, list[str]]]:
    """The pytest runs of a backend suite: (timing name, options) for each.

    The workers' share first, then the serial tests alone. With a -m of the
    user's, which would replace ours, one run without workers selects it.
    """
    if any(arg.startswith("-m") for arg in extra):
        return [("pytest", [])]
    return [
        ("pytest", ["-n", str(workers), "-m", f"not {SERIAL_MARK}"]),
        ("pytest serial", ["-m", SERIAL_MARK]),
    ]


def run_backend_suite(backend: str, extra: list, rust_tests: bool = True) -> SuiteResult:
    """Database, build, Rust unit tests, virtualenv, pytest: one backend, end to end."""
    result = SuiteResult(backend)
    started = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        try:
            url = cleanup.enter_context(databases.provide_database(backend))
        except databases.NoPostgresServer as exc:
            if running_in_ci():
                raise
            result.status = "skipped"
            result.notes.append("no PostgreSQL server on this machine")
            print_paragraph(f"SKIPPING the {backend} backend: {exc}", prefix="cloaca: WARNING: ")
            return result
        result.timings["database"] = time.monotonic() - started
        built = build.build_backend_wheel(backend)
        result.timings["build"] = built.seconds
        result.notes.append("build skipped (unchanged)" if built.skipped else f"built {built.wheel.name}")
        if rust_tests:
            run_rust_tests(result, backend, url)
        step = time.monotonic()
        result.notes += venvs.ensure_backend_venv(backend, built.wheel)
        result.timings["venv"] = time.monotonic() - step
        env = test_environment(CLOACA_TEST_BACKEND=backend, CLOACA_TEST_DATABASE_URL=url)
        for phase, options in pytest_phases(extra, PYTEST_WORKERS):
            run_pytest(
                result,
                project.venv_python(backend),
                [project.PYTHON_TESTS_DIR],
                ["--ignore", str(project.PIPELINE_TESTS_DIR), *options, *extra],
                env,
                phase=phase,
            )
    return result


def run_pipeline_suite(extra: list) -> SuiteResult:
    """python-tests/pipeline/: the angreal tasks themselves, in the development interpreter.

    On PIPELINE_WORKERS pytest-xdist workers, then the tests that work in the
    real checkout alone (IN_CHECKOUT in python-tests/pipeline/conftest.py).
    """
    result = SuiteResult("pipeline")
    for phase, options in pytest_phases(extra, PIPELINE_WORKERS):
        run_pytest(result, project.PYTHON, [project.PIPELINE_TESTS_DIR], [*options, *extra], test_environment(), phase)
    return result


def print_summary(results: list[SuiteResult], total_seconds: float) -> None:
    """A table of suites with their outcome and timings, then one closing line."""
    print("\n" + "=" * 30 + " cloaca test summary " + "=" * 30)
    for r in results:
        c = r.counts
        times = ", ".join(f"{k} {v:.1f}s" for k, v in r.timings.items())
        print(
            f"  {r.name:<9} {r.status.upper():<9} {c['passed']} passed, {c['failed']} failed, "
            f"{c['skipped']} skipped   [{times}]"
        )
        if r.notes:
            print(f"  {'':<9} {'; '.join(r.notes)}")
    totals = {k: sum(r.counts[k] for r in results) for k in ("passed", "failed", "skipped")}
    print(f"  total time {total_seconds:.1f}s")
    print(f"total: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped", flush=True)
