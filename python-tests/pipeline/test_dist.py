"""`angreal cloaca dist`: a wheelhouse that installs and runs with no package index.

`dist` runs once per module, in the checkout (a copy would compile every
release wheel from scratch): it reuses release wheels `bench` or an earlier
`dist` built, so a CI run builds each one once. Then, per backend, a fresh
virtualenv gets `pip install --no-index --find-links dist 'cloaca[B]'` and runs
examples/quickstart.py: on a SQLite file, and on the harness's PostgreSQL server
(the same as `angreal cloaca test` provides).
"""

import contextlib
import subprocess
import sys
import tomllib

import pytest

from conftest import BACKENDS, IN_CHECKOUT, ROOT, base_env, run_angreal

sys.path.insert(0, str(ROOT / ".angreal"))
from cloaca_pipeline import databases, suites  # the pipeline package lives in .angreal/

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cloaca"]["version"]
DIST = ROOT / "dist"
QUICKSTART = ROOT / "examples" / "quickstart.py"
#: Release builds of both backends on a cold cargo cache, on a shared 2-core machine.
DIST_TIMEOUT_S = 3600

#: `dist` renders and builds in the checkout.
pytestmark = IN_CHECKOUT


def run(command, **kwargs):
    """Run a command with text output; fail the test with its output if it fails."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheelhouse():
    done = run_angreal(ROOT, "cloaca", "dist", timeout=DIST_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return DIST


def user_venv(tmp_path, wheelhouse, extra):
    """A fresh virtualenv with `cloaca[extra]` installed from the wheelhouse alone; its python."""
    venv = tmp_path / f"user-{extra}"
    run([sys.executable, "-m", "virtualenv", "--quiet", "--python", sys.executable, venv])
    python = venv / "bin" / "python"
    pip_install = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip_install, "--no-index", "--find-links", wheelhouse, f"cloaca[{extra}]"], env=base_env())
    return python


def installed_backends(python):
    """The cloaca backend packages importable in a virtualenv."""
    probe = "import importlib.util as u, sys; print(' '.join(b for b in sys.argv[1:] if u.find_spec('cloaca_' + b)))"
    return run([python, "-c", probe, *BACKENDS]).stdout.split()


def run_quickstart(python, tmp_path, *args):
    """examples/quickstart.py in the user's virtualenv, with no backend forced; its stdout."""
    env = base_env()
    env.pop("CLOACA_BACKEND", None)
    return run([python, QUICKSTART, *args], cwd=tmp_path, env=env).stdout


def assert_command_line_runs(python, backend):
    """The `cloaca` script the dispatcher's wheel installs starts, with nothing beyond the wheelhouse."""
    done = run([python.parent / "cloaca", "--version"], env=base_env())
    assert done.stdout == f"cloaca {VERSION} ({backend} backend)\n", done.stdout


def assert_quickstart_completed(stdout, backend):
    assert f"cloaca {VERSION}, backend: {backend}," in stdout, stdout
    assert "transform_p2 attempt 1 failed" in stdout, stdout
    assert "summary done: loaded 24 rows from 4 partitions" in stdout, stdout
    assert stdout.rstrip().endswith("status: Completed"), stdout


def test_dist_holds_one_release_wheel_per_backend_and_the_dispatcher(wheelhouse):
    names = sorted(p.name for p in wheelhouse.glob("*.whl"))
    assert f"cloaca-{VERSION}-py3-none-any.whl" in names, names
    for backend in BACKENDS:
        assert len([n for n in names if n.startswith(f"cloaca_{backend}-{VERSION}-")]) == 1, names
    assert len(names) == len(BACKENDS) + 1, names
    release = ROOT / "cloaca-backend" / "target" / "wheels" / "release"
    for backend in BACKENDS:
        (built,) = release.glob(f"cloaca_{backend}-*.whl")
        assert (wheelhouse / built.name).read_bytes() == built.read_bytes(), "dist/ holds the release build"


def test_a_second_dist_builds_nothing(wheelhouse):
    done = run_angreal(ROOT, "cloaca", "dist")
    assert done.returncode == 0, done.stdout + done.stderr
    listed = [line for line in done.stdout.splitlines() if line.startswith("dist/")]
    assert len(listed) == len(BACKENDS) + 1, done.stdout
    assert all(line.endswith("(up to date, build skipped)") for line in listed), done.stdout


def test_cloaca_sqlite_from_the_wheelhouse_runs_the_quickstart(wheelhouse, tmp_path):
    python = user_venv(tmp_path, wheelhouse, "sqlite")
    assert installed_backends(python) == ["sqlite"]
    assert_quickstart_completed(run_quickstart(python, tmp_path), "sqlite")
    assert_command_line_runs(python, "sqlite")


def test_cloaca_postgres_from_the_wheelhouse_runs_the_quickstart(wheelhouse, tmp_path):
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(databases.provide_database("postgres"))
        except databases.NoPostgresServer as exc:
            if suites.running_in_ci():
                raise
            pytest.skip(f"no PostgreSQL server: {exc}")
        python = user_venv(tmp_path, wheelhouse, "postgres")
        assert installed_backends(python) == ["postgres"]
        assert_quickstart_completed(run_quickstart(python, tmp_path, url), "postgres")
        assert_command_line_runs(python, "postgres")
