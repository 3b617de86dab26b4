"""`demo`: examples/quickstart.py, run against a freshly built backend."""

from __future__ import annotations

import subprocess

from cloaca_pipeline import build, project, suites, venvs
from cloaca_pipeline.errors import ChecksFailed

QUICKSTART = project.EXAMPLES_DIR / "quickstart.py"


def run_quickstart(backend: str) -> None:
    """Build `backend`, bring its virtualenv up to date and run the quickstart in it."""
    built = build.build_backend_wheel(backend)
    venvs.ensure_backend_venv(backend, built.wheel)
    print(f"running {project.relative(QUICKSTART)} with the {backend} backend", flush=True)
    completed = subprocess.run(
        [str(project.venv_python(backend)), str(QUICKSTART)],
        cwd=project.ROOT,
        env=suites.test_environment(),
        check=False,
    )
    if completed.returncode != 0:
        raise ChecksFailed(
            f"{project.relative(QUICKSTART)} exited with status {completed.returncode} (its output is above)."
        )
