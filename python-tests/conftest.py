"""Fixtures for the backend suites, run by `angreal cloaca test` in each backend's virtualenv.

The harness tells the suite which backend it is testing and which database to
use through CLOACA_TEST_BACKEND and CLOACA_TEST_DATABASE_URL (a temporary
SQLite file, or a real PostgreSQL server it started or was given).
"""

import os
import subprocess
import sys

import pytest


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these tests with `angreal cloaca test`, which "
                    "builds the backend, installs it in its own virtualenv and provides the database.")
    return value


@pytest.fixture(scope="session")
def backend() -> str:
    """The backend this suite runs against ("sqlite" or "postgres")."""
    return _required_env("CLOACA_TEST_BACKEND")


@pytest.fixture(scope="session")
def other_backends(backend):
    """The backends this virtualenv does not have."""
    from cloaca._build_info import BACKENDS

    return [b for b in BACKENDS if b != backend]


@pytest.fixture(scope="session")
def database_url(backend) -> str:
    """A URL of a real database for this backend, provided by the harness."""
    url = _required_env("CLOACA_TEST_DATABASE_URL")
    expected = {"sqlite": ("sqlite://",), "postgres": ("postgres://", "postgresql://")}[backend]
    assert url.startswith(expected), f"{url!r} is not a {backend} URL"
    return url


@pytest.fixture
def run_python():
    """Run a Python snippet in a fresh interpreter of this virtualenv; returns CompletedProcess.

    The dispatcher decides its backend at import time, so its error paths are
    exercised in subprocesses, each with its own environment.
    """

    def run(code: str, **env_overrides):
        env = {k: v for k, v in os.environ.items() if k != "CLOACA_BACKEND"}
        env.update(env_overrides)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=60)

    return run
