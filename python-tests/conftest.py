"""Fixtures for the backend suites, run by `angreal cloaca test` in each backend's virtualenv.

The harness tells the suite which backend it is testing and which database to
use through CLOACA_TEST_BACKEND and CLOACA_TEST_DATABASE_URL (a temporary
SQLite file, or a real PostgreSQL server it started or was given).

The engine suites also get a new empty database per test (fresh_database_url),
direct reads of the stored state (db_query) and standalone scripts in their own
processes (run_scenario, scripts in scenarios/), e.g. to SIGKILL a runner mid-task.
"""

import contextlib
import glob
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

#: Standalone scripts the scenario tests run in their own processes.
SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"

# Workflow shapes ({task_id: [dependency ids]}) that several suites declare.
# DIAMOND is declared out of alphabetical order on purpose: the topological
# order breaks ties by task id, not by declaration.
DIAMOND = {"start": [], "zeta": ["start"], "alpha": ["start"], "end": ["zeta", "alpha"]}

WIDE = {
    "load_config": [],
    "fetch_users": [],
    "fetch_orders": [],
    "clean_users": ["fetch_users"],
    "clean_orders": ["fetch_orders"],
    "audit": ["fetch_orders"],
    "join": ["clean_users", "clean_orders"],
    "report": ["join", "load_config"],
    "notify": ["report"],
}


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: run these tests with `angreal cloaca test`, which "
            "builds the backend, installs it in its own virtualenv and provides the database."
        )
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


#: For the tests that create login roles or compare the server's set of roles:
#: roles belong to the whole PostgreSQL server, not to one test's database, so
#: these tests run alone, after the workers' share (as the outage tests do),
#: and never see another worker's roles come and go.
CLUSTER_ROLES = pytest.mark.serial


def pytest_collection_modifyitems(items):
    """Mark every test that stops or restarts the PostgreSQL server as serial.

    The harness runs the suite on several pytest-xdist workers, then the serial
    tests alone (see suites.py): a server outage would cut every other
    worker's connections in the middle of its own test.
    """
    for item in items:
        if "server_control" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.serial)


@pytest.fixture(scope="session")
def database_url(backend):
    """A URL of a real database for this backend, provided by the harness.

    On a pytest-xdist worker, a database of the worker's own beside the
    harness's (a file next to it, or a new database on the same server): the
    module-scoped runners of two workers must not claim each other's tasks.
    """
    url = _required_env("CLOACA_TEST_DATABASE_URL")
    expected = {"sqlite": ("sqlite://",), "postgres": ("postgres://", "postgresql://")}[backend]
    assert url.startswith(expected), f"{url!r} is not a {backend} URL"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        yield url
    elif backend == "sqlite":
        path = Path(sqlite_path_of(url))
        yield f"sqlite:///{path.with_name(f'{path.stem}-{worker}{path.suffix}')}"
    else:
        name = f"cloaca_w_{worker}_{uuid.uuid4().hex[:8]}"
        psql(url, f'CREATE DATABASE "{name}"')
        parts = urlsplit(url)
        try:
            yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
        finally:
            psql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def run_python():
    """Run a Python snippet in a fresh interpreter of this virtualenv; returns CompletedProcess.

    The dispatcher decides its backend at import time, so its error paths are
    exercised in subprocesses, each with its own environment.
    """

    def run(code: str, **env_overrides):
        env = {k: v for k, v in os.environ.items() if k != "CLOACA_BACKEND"}
        env.update(env_overrides)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)

    return run


# ---------------------------------------------------------------------------
# Fresh databases, direct queries and scenario processes (the engine suites).
# ---------------------------------------------------------------------------


def psql_path() -> str:
    """psql from PATH, else the newest /usr/lib/postgresql/*/bin/psql."""
    found = shutil.which("psql")
    if found:
        return found
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/psql"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True
    )
    if candidates:
        return candidates[0]
    pytest.fail(
        "psql was found neither on PATH nor in /usr/lib/postgresql/*/bin; the postgres "
        "suite needs it to create databases and to check their state."
    )


# psql output separators: unit/record separators and a NULL marker that cannot
# collide with the text (JSON, tracebacks) the engine stores.
_FIELD_SEP, _RECORD_SEP, _NULL_MARK = "\x1f", "\x1e", "\x1d"


def psql(url: str, sql: str, *, timeout: float = 60) -> str:
    """Run one SQL command with psql against `url`; return its raw unaligned output."""
    done = subprocess.run(
        [
            psql_path(),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            _FIELD_SEP,
            "-R",
            _RECORD_SEP,
            "-P",
            f"null={_NULL_MARK}",
            "-d",
            url,
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(f"psql failed on {url} running {sql!r}: {done.stderr.strip()}")
    return done.stdout


def sqlite_path_of(url: str) -> str:
    """The file path of a sqlite URL (sqlite:///abs, sqlite:////abs or sqlite://relative)."""
    rest = url.removeprefix("sqlite://").split("?", 1)[0]
    if rest.startswith("/"):
        return "/" + rest.lstrip("/")
    return rest


_SQLITE_QUERY = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
rows = db.execute(sys.argv[2]).fetchall()
print(json.dumps([[None if v is None else (v.decode() if isinstance(v, bytes) else str(v))
                   for v in row] for row in rows]))
"""


def query_database(url: str, sql: str, must_exist: bool = True) -> list:
    """Rows of `sql` on the database of `url`, each a tuple of str (or None for NULL).

    A SQLite file must exist already unless `must_exist` is False.
    """
    if url.startswith("sqlite:"):
        path = sqlite_path_of(url)
        assert not must_exist or os.path.exists(path), f"db_query: {path} does not exist"
        # In a process of its own: this process also holds cloaca's bundled SQLite,
        # and two SQLite libraries in one process do not see each other's file
        # locks, so closing a sqlite3-module connection here would take the WAL
        # files away from a runner that is still open on the same database.
        done = subprocess.run(
            [sys.executable, "-c", _SQLITE_QUERY, path, sql], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"db_query on {path} running {sql!r}: {done.stderr}"
        return [tuple(row) for row in json.loads(done.stdout)]
    if url.startswith(("postgres://", "postgresql://")):
        out = psql(url, sql)
        if out == "":
            return []
        out = out.removesuffix("\n")
        return [
            tuple(None if v == _NULL_MARK else v for v in record.split(_FIELD_SEP)) for record in out.split(_RECORD_SEP)
        ]
    raise AssertionError(f"db_query does not know the database URL {url!r}")


@pytest.fixture
def db_query():
    """query(url, sql) -> list of tuples of str/None, read straight from the database.

    sqlite URLs are read with the sqlite3 module, postgres URLs with psql, so the
    tests check the engine's stored state without going through the engine.
    """
    return query_database


class PostgresDatabases:
    """New empty databases on the harness's server, made ahead of need and dropped
    behind, by one background thread over one psql session.

    Starting psql twice per test (create, then drop) and waiting for both cost
    the postgres suite minutes; here a test takes a database that is ready and
    leaves its drop to the thread.
    """

    AHEAD = 2

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.session = self.start_session()
        self.ready: queue.Queue = queue.Queue()
        self.requests: queue.Queue = queue.Queue()
        for _ in range(self.AHEAD):
            self.requests.put(("create", None))
        self.thread = threading.Thread(target=self.serve, name="test-databases", daemon=True)
        self.thread.start()

    def start_session(self) -> subprocess.Popen:
        return subprocess.Popen(
            [psql_path(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-d", self.admin_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def run(self, sql: str, check: str) -> str:
        """Runs `sql`, then `check` (a query printing one line), and returns that line.

        The outage tests restart the server, which ends the session: a new one
        is started (for up to a minute, while the server comes back) and the
        command runs again, which the check makes safe.
        """
        deadline = time.monotonic() + 60
        while True:
            try:
                self.session.stdin.write(f"{sql};\n{check};\n")
                self.session.stdin.flush()
                line = self.session.stdout.readline()
                if line:
                    return line.strip()
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"psql on {self.admin_url} stopped answering: {sql}")
            with contextlib.suppress(OSError):
                self.session.kill()
            self.session.wait()
            time.sleep(0.2)
            self.session = self.start_session()

    def serve(self) -> None:
        try:
            self.serve_requests()
        except (OSError, ValueError, RuntimeError) as exc:  # psql is gone: every later take() says so
            while True:
                self.ready.put(RuntimeError(f"the psql session making test databases ended: {exc!r}"))
                if self.requests.get()[0] == "stop":
                    return

    def serve_requests(self) -> None:
        while True:
            kind, name = self.requests.get()
            if kind == "stop":
                return
            if kind == "drop":
                self.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', "SELECT 'dropped'")
                continue
            name = f"cloaca_t_{uuid.uuid4().hex[:16]}"
            exists = self.run(f'CREATE DATABASE "{name}"', f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
            self.ready.put(
                name if exists == "1" else RuntimeError(f"CREATE DATABASE {name} failed (psql said {exists!r})")
            )

    def take(self) -> str:
        """A new empty database's name (and a request for the next one)."""
        self.requests.put(("create", None))
        found = self.ready.get(timeout=120)
        if isinstance(found, Exception):
            raise found
        return found

    def give_back(self, name: str) -> None:
        self.requests.put(("drop", name))

    def close(self) -> None:
        self.requests.put(("stop", None))
        self.thread.join(timeout=300)
        while not self.ready.empty():
            leftover = self.ready.get()
            if isinstance(leftover, str):
                self.run(f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)', "SELECT 'dropped'")
        self.session.stdin.close()
        self.session.wait(timeout=60)


@pytest.fixture(scope="session")
def postgres_databases(backend, database_url):
    """The postgres suite's supply of new databases (see PostgresDatabases); None on sqlite."""
    if backend != "postgres":
        yield None
        return
    databases = PostgresDatabases(database_url)
    yield databases
    databases.close()


@pytest.fixture
def fresh_database_url(backend, database_url, tmp_path, postgres_databases):
    """A URL of a new, empty database of this backend, dropped after the test.

    sqlite: a new file in the test's temporary directory. postgres: a new database
    with a unique name on the harness's server, dropped (WITH (FORCE)) afterwards.
    """
    if backend == "sqlite":
        yield "sqlite:///" + str(tmp_path / "cloaca.db").lstrip("/")
        return
    name = postgres_databases.take()
    parts = urlsplit(database_url)
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    finally:
        postgres_databases.give_back(name)


@pytest.fixture
def workflow_name(request) -> str:
    """A workflow name unique to this test (the workflow registry is process-global)."""
    base = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name).strip("_")
    return f"{base}_{uuid.uuid4().hex[:8]}"


class ScenarioRunner:
    """Runs python-tests/scenarios/<script> in this virtualenv's interpreter.

    run(script, *args) waits and returns a CompletedProcess; start(script, *args)
    returns a Popen whose output goes to files (proc.output() reads them). Every
    process started here is killed when the test ends, whatever happened.
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started = []
        self._count = 0

    @staticmethod
    def env(extra=None) -> dict:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra or {})
        return env

    @staticmethod
    def command(script: str, args) -> list:
        path = SCENARIOS_DIR / script
        assert path.is_file(), f"no scenario script {path}"
        return [sys.executable, str(path), *[str(a) for a in args]]

    def __call__(self, script: str, *args, timeout: float = 180, env=None):
        return subprocess.run(
            self.command(script, args), capture_output=True, text=True, env=self.env(env), timeout=timeout
        )

    run = __call__

    def start(self, script: str, *args, env=None) -> subprocess.Popen:
        self._count += 1
        stem = f"{Path(script).stem}-{self._count}"
        out_path, err_path = self.log_dir / f"{stem}.out", self.log_dir / f"{stem}.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                self.command(script, args), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env(env)
            )
        self.started.append(proc)
        proc.out_path, proc.err_path = out_path, err_path
        proc.output = lambda: (
            f"--- stdout of {script} (pid {proc.pid}) ---\n"
            f"{out_path.read_text(errors='replace')}"
            f"--- stderr ---\n{err_path.read_text(errors='replace')}"
        )
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


@pytest.fixture
def run_scenario(tmp_path):
    """Run or start scenario scripts (python-tests/scenarios/); see ScenarioRunner."""
    log_dir = tmp_path / "scenario-logs"
    log_dir.mkdir(exist_ok=True)
    runner = ScenarioRunner(log_dir)
    try:
        yield runner
    finally:
        runner.kill_all()


def poll_until(predicate, timeout: float, what: str, interval: float = 0.05, proc=None):
    """Poll `predicate` until it returns a true value (returned); fail after `timeout` s.

    With `proc`, also fail as soon as that process has exited (showing its output),
    since it was supposed to bring the condition about.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            value = predicate()
            if value:
                return value
            pytest.fail(
                f"waiting for {what}: the process exited with {proc.returncode}\n"
                + (proc.output() if hasattr(proc, "output") else "")
            )
        if time.monotonic() > deadline:
            extra = ("\n" + proc.output()) if proc is not None and hasattr(proc, "output") else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


@pytest.fixture
def wait_until():
    """poll_until(predicate, timeout, what, interval=0.05, proc=None) as a fixture."""
    return poll_until


def start_scale_workers(run_scenario, wait_until, tmp_path, common: list, result_file):
    """Three scale_worker.py processes on one database: two serving, then (once both are up) the one
    that starts the run and writes its result to `result_file`. Returns (serving workers, starter)."""
    workers = []
    for n in range(2):
        ready = tmp_path / f"ready-{n}"
        proc = run_scenario.start("scale_worker.py", *common, "--ready-file", ready)
        wait_until(ready.exists, 120, f"worker {n} to open its runner", proc=proc)
        workers.append(proc)
    ready = tmp_path / "ready-starter"
    starter = run_scenario.start(
        "scale_worker.py", *common, "--ready-file", ready, "--start", "--result-file", result_file
    )
    return workers, starter


@pytest.fixture
def sqlite_only(backend):
    """Skips a test of SQLite files on the postgres backend (use with pytest.mark.usefixtures)."""
    if backend != "sqlite":
        pytest.skip("a SQLite-file case: the postgres backend does not take sqlite URLs")


@pytest.fixture
def postgres_only(backend):
    """Skips a test of a PostgreSQL server on the sqlite backend (use with pytest.mark.usefixtures)."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL-server case: the sqlite backend does not take postgres URLs")
