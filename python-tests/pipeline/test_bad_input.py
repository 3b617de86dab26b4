"""Bad input to the angreal tasks: one clear paragraph and a non-zero exit, never a traceback."""

import shutil
import socket
import sys

import pytest

from conftest import ANGREAL, IN_CHECKOUT, ROOT, base_env, run_angreal


def assert_clear_error(done, status, *phrases):
    output = done.stdout + done.stderr
    assert done.returncode == status, output
    assert "Traceback" not in output
    assert "cloaca: error:" in done.stderr
    for phrase in phrases:
        assert phrase in " ".join(output.split()), output


@pytest.mark.parametrize("command", ["generate", "build", "test"])
def test_unknown_backend(tree, command):
    done = run_angreal(tree, "cloaca", command, "--backend", "oracle")
    assert_clear_error(done, 2, "Unknown backend 'oracle'", "sqlite, postgres", "--backend sqlite")


def narrow_path(tmp_path, *programs):
    """A PATH holding only angreal, python, git and the given programs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "git", *programs):
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    (bin_dir / "angreal").symlink_to(ANGREAL)
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


def test_missing_cargo(tree, tmp_path):
    env = base_env(PATH=narrow_path(tmp_path))
    done = run_angreal(tree, "cloaca", "build", "--backend", "sqlite", env=env)
    assert_clear_error(done, 2, "`cargo` was not found on PATH", "Install the Rust toolchain")


def test_missing_maturin(tree, tmp_path):
    env = base_env(PATH=narrow_path(tmp_path, "cargo", "rustc"))
    done = run_angreal(tree, "cloaca", "build", "--backend", "sqlite", env=env)
    assert_clear_error(done, 2, "`maturin` was not found on PATH", "pip install .")


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postgres_url_that_does_not_answer(tree):
    url = f"postgresql://cloaca@127.0.0.1:{closed_port()}/cloaca"
    env = base_env(CLOACA_TEST_POSTGRES_URL=url)
    done = run_angreal(tree, "cloaca", "test", "--backend", "postgres", env=env)
    assert_clear_error(
        done,
        2,
        "does not answer",
        "CLOACA_TEST_POSTGRES_URL",
        "unset the variable to let the harness start a throw-away local cluster",
    )
    assert not (tree / ".venvs").exists(), "nothing is built or installed for an unreachable database"


def test_postgres_url_that_is_not_a_postgres_url(tree):
    env = base_env(CLOACA_TEST_POSTGRES_URL="mysql://root@127.0.0.1/db")
    done = run_angreal(tree, "cloaca", "test", "--backend", "postgres", env=env)
    assert_clear_error(done, 2, "is not a PostgreSQL URL")


def test_port_that_answers_but_is_not_postgres(tree):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"postgresql://x@127.0.0.1:{server.getsockname()[1]}/db"
        env = base_env(CLOACA_TEST_POSTGRES_URL=url)
        # The listener accepts (kernel backlog) but never answers: a timeout, reported.
        done = run_angreal(tree, "cloaca", "test", "--backend", "postgres", env=env)
    assert_clear_error(done, 2, "CLOACA_TEST_POSTGRES_URL")


def test_unbalanced_pytest_args(tree):
    done = run_angreal(tree, "cloaca", "test", "--backend", "sqlite", '--pytest-args=-k "oops')
    assert_clear_error(done, 2, "cannot be split into arguments")


@IN_CHECKOUT
def test_pytest_rejecting_its_arguments_is_bad_input(tmp_path):
    # The Rust unit tests run before pytest does: what they leave in the
    # temporary directory is checked here too.
    args = ("cloaca", "test", "--backend", "sqlite", "--pytest-args=--no-such-option")
    done = run_angreal(ROOT, *args, env=base_env(TMPDIR=str(tmp_path)))
    assert_clear_error(done, 2, "pytest rejected its arguments", "--no-such-option")
    assert "test result: ok." in done.stdout, done.stdout[-2000:]
    assert list(tmp_path.iterdir()) == [], "the test run left files in the temporary directory"


@IN_CHECKOUT
def test_k_expression_is_passed_to_pytest_and_selecting_nothing_fails():
    """Runs in the real checkout: its sqlite build and venv are current, so this is quick."""
    selected = run_angreal(ROOT, "cloaca", "test", "--backend", "sqlite", "-k", "test_hello_world")
    assert selected.returncode == 0, selected.stdout + selected.stderr
    assert "total: 1 passed, 0 failed" in selected.stdout
    nothing = run_angreal(ROOT, "cloaca", "test", "--backend", "sqlite", "-k", "no_such_test_anywhere")
    assert_clear_error(nothing, 1, "no test ran")


@IN_CHECKOUT
def test_demo_runs_the_quickstart_workflow_to_completion():
    """The quickstart's ETL workflow: every task reports, the flaky one is retried, it completes."""
    done = run_angreal(ROOT, "cloaca", "demo")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "backend: sqlite" in out
    finished = [line.split()[1] for line in out.splitlines() if line.startswith("[task] ") and " done" in line]
    transforms = [f"transform_p{p}" for p in range(4)]
    assert sorted(finished) == sorted(["extract", *transforms, "load", "summary"]), out
    assert finished[0] == "extract" and finished[-2:] == ["load", "summary"], out
    assert "[task] transform_p2 attempt 1 failed: ConnectionError" in out
    assert "[task] transform_p2 done: 6 rows (attempt 2)" in out
    assert '"summary": "loaded 24 rows from 4 partitions' in out
    assert out.rstrip().endswith("status: Completed"), out
