"""One virtualenv per backend: created once, then only topped up with what changed.

The virtualenv records what was installed into it (wheel hash, dispatcher
hash, test requirements, check tools); a re-run with nothing changed starts no
pip at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from cloaca_pipeline import project, toolchain
from cloaca_pipeline.errors import PipelineError

INSTALLED_RECORD = "cloaca-installed.json"
#: Development tools `check` runs inside a backend's virtualenv: stubtest (part
#: of mypy) has to import the installed extension, so it runs there, at the pin
#: of the development environment.
CHECK_TOOLS = ("mypy",)


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dispatcher_digest() -> str:
    """A hash of the dispatcher's sources and stubs (the package is reinstalled when it changes)."""
    h = hashlib.sha256()
    package = project.DISPATCHER_PACKAGE_DIR
    shipped = sorted([*package.rglob("*.py"), *package.rglob("*.pyi"), *package.rglob("py.typed")])
    files = [project.DISPATCHER_DIR / "pyproject.toml", *shipped]
    for path in files:
        if path.exists():
            h.update(project.relative(path).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def interpreter_identity() -> str:
    """The pipeline's interpreter: path and exact version."""
    return f"{project.PYTHON} {sys.version}"


def check_requirements() -> list[str]:
    """The pinned requirements of CHECK_TOOLS, as the development environment lists them."""
    return [r for r in project.facts().dev_requirements if project.requirement_name(r) in CHECK_TOOLS]


def create_venv(backend: str) -> None:
    """Create the backend's virtualenv with the pipeline's fixed interpreter."""
    toolchain.run(
        [project.PYTHON, "-m", "virtualenv", "--quiet", "--python", project.PYTHON, project.venv_dir(backend)],
        what=f"creating the virtualenv {project.relative(project.venv_dir(backend))}",
        advice="virtualenv comes with the development tools: `pip install .` in the "
        "project root, then run the command again.",
    )


def read_record(backend: str) -> dict:
    """What the pipeline installed into the backend's virtualenv last time."""
    try:
        return json.loads((project.venv_dir(backend) / INSTALLED_RECORD).read_text())
    except (OSError, ValueError):
        return {}


def pip_install(backend: str, args: list, what: str) -> None:
    """pip install into the backend's virtualenv."""
    toolchain.run(
        [project.venv_python(backend), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
        what=f"pip install of {what} into {project.relative(project.venv_dir(backend))}",
        advice="If the virtualenv is damaged, `angreal cloaca scrub` removes it and the "
        "next test run creates it afresh.",
    )


def ensure_backend_venv(backend: str, wheel: Path) -> list[str]:
    """Make .venvs/<backend> hold exactly the current wheel, dispatcher and test tools.

    Returns what had to be done, for the summary ("created venv", ...).
    """
    actions = []
    record = read_record(backend)
    if project.venv_python(backend).exists() and record.get("interpreter") != interpreter_identity():
        shutil.rmtree(project.venv_dir(backend))
        record = {}
        actions.append("removed venv of another interpreter")
    if not project.venv_python(backend).exists():
        create_venv(backend)
        actions.append("created venv")
    wanted = {
        "interpreter": interpreter_identity(),
        "test_requirements": list(project.facts().test_requirements),
        "check_requirements": check_requirements(),
        "wheel": file_digest(wheel),
        "dispatcher": dispatcher_digest(),
    }
    if record.get("test_requirements") != wanted["test_requirements"]:
        pip_install(backend, wanted["test_requirements"], "the test requirements")
        actions.append("installed test requirements")
    if record.get("check_requirements") != wanted["check_requirements"]:
        pip_install(backend, wanted["check_requirements"], "the check tools")
        actions.append("installed check tools")
    if record.get("wheel") != wanted["wheel"]:
        pip_install(backend, ["--no-deps", "--force-reinstall", wheel], wheel.name)
        actions.append(f"installed {wheel.name}")
    if record.get("dispatcher") != wanted["dispatcher"]:
        if not (project.DISPATCHER_DIR / "pyproject.toml").exists():
            raise PipelineError(
                "cloaca/pyproject.toml is missing: it is rendered by `angreal cloaca generate`; "
                "run that (or build/test, which generate first)."
            )
        pip_install(
            backend, ["--no-deps", "--force-reinstall", project.DISPATCHER_DIR], "the dispatcher package cloaca"
        )
        actions.append("installed dispatcher")
    (project.venv_dir(backend) / INSTALLED_RECORD).write_text(json.dumps(wanted, indent=1))
    return actions
