"""Where things are, and the facts of [tool.cloaca] in the top-level pyproject.toml.

Every path the pipeline touches is defined here once; the root is found from
this file's own location, so a copy of the tree is a complete, separate project.
"""

from __future__ import annotations

import functools
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cloaca_pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
TEMPLATES_DIR = ROOT / "templates"
BACKEND_DIR = ROOT / "cloaca-backend"
RUST_SOURCE_DIR = BACKEND_DIR / "src"
DISPATCHER_DIR = ROOT / "cloaca"
DISPATCHER_PACKAGE_DIR = DISPATCHER_DIR / "src" / "cloaca"
PYTHON_TESTS_DIR = ROOT / "python-tests"
PIPELINE_TESTS_DIR = PYTHON_TESTS_DIR / "pipeline"
EXAMPLES_DIR = ROOT / "examples"

#: The one cargo target directory every backend build shares, so the second
#: backend reuses the dependencies the first compiled.
CARGO_TARGET_DIR = BACKEND_DIR / "target"
#: Where `cargo test` builds the Rust unit tests. maturin builds with PYO3_*
#: variables a plain cargo does not set, and pyo3's build script reruns when
#: they change: sharing one directory would recompile pyo3 at every switch
#: between a wheel build and a unit-test run.
UNIT_TEST_TARGET_DIR = CARGO_TARGET_DIR / "unit-tests"
#: Where maturin is told (--out) to put wheels, and where installs look.
WHEEL_DIR = CARGO_TARGET_DIR / "wheels"
#: One virtualenv per backend, created once and reused.
VENVS_DIR = ROOT / ".venvs"
#: The pipeline's bookkeeping: what generate wrote, build fingerprints.
STATE_DIR = ROOT / ".cloaca-cache"
GENERATED_MANIFEST = ROOT / ".cloaca-generated.json"

#: The one interpreter every build and every virtualenv uses: the one angreal
#: runs in (the development environment), so nothing rebuilds because a
#: different Python happened to be first on PATH.
PYTHON = Path(sys.executable)


@dataclass(frozen=True)
class ProjectFacts:
    """The single source of truth read from ``[tool.cloaca]``."""

    version: str
    backends: tuple[str, ...]
    python_floor: str
    backend_only: dict[str, frozenset[str]]
    dev_requirements: tuple[str, ...]
    test_requirements: tuple[str, ...]


@functools.cache
def facts() -> ProjectFacts:
    """Read and validate [tool.cloaca] from the top-level pyproject.toml."""
    try:
        data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(
            f"Cannot read the project facts from {PYPROJECT}: {exc}. "
            "This file holds [tool.cloaca] (version, backends); restore it from git."
        ) from exc
    table = data.get("tool", {}).get("cloaca", {})
    missing = [k for k in ("version", "backends", "python-floor") if k not in table]
    if missing:
        raise PipelineError(
            f"{PYPROJECT} lacks {', '.join(missing)} in [tool.cloaca]; the pipeline "
            "derives the version and the backend list from there."
        )
    backends = tuple(table["backends"])
    backend_only = {b: frozenset(table.get("backend-only", {}).get(b, [])) for b in backends}
    dev_requirements = tuple(data.get("project", {}).get("dependencies", []))
    test_names = set(table.get("test-requirements", ["pytest"]))
    test_requirements = tuple(r for r in dev_requirements if requirement_name(r) in test_names)
    return ProjectFacts(
        version=table["version"],
        backends=backends,
        python_floor=table["python-floor"],
        backend_only=backend_only,
        dev_requirements=dev_requirements,
        test_requirements=test_requirements,
    )


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement string, normalised."""
    name = requirement
    for stop in "<>=!~[; @":
        name = name.split(stop, 1)[0]
    return name.strip().lower().replace("_", "-")


def validate_backend(backend: str | None) -> str:
    """Return `backend` if it is one of ours, else raise an error that lists them."""
    known = facts().backends
    if backend in known:
        return backend
    what = "No backend was given" if backend is None else f"Unknown backend {backend!r}"
    raise PipelineError(
        f"{what}: cloaca has the backends {', '.join(known)} "
        f"(listed in [tool.cloaca] backends of {PYPROJECT.name}). "
        f"Pass one of them, e.g. --backend {known[0]}."
    )


def selected_backends(backend: str | None) -> tuple[str, ...]:
    """The backends a command should act on: the one given, or all of them."""
    return facts().backends if backend is None else (validate_backend(backend),)


def extension_module(backend: str) -> str:
    """The Python name of a backend's package and extension module."""
    return f"cloaca_{backend}"


def venv_dir(backend: str) -> Path:
    """The virtualenv the tests of `backend` run in."""
    return VENVS_DIR / backend


def venv_python(backend: str) -> Path:
    """The interpreter inside a backend's virtualenv."""
    return venv_dir(backend) / "bin" / "python"


def relative(path: Path) -> str:
    """`path` relative to the project root when inside it, for messages."""
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return str(path)
