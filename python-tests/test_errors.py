"""cloaca's exceptions: one class per kind of failure, all under cloaca.CloacaError.

Covers the hierarchy itself (every class exported on both backends, documented,
a CloacaError, and also the builtin exception that API raised before the classes
existed, so `except ValueError` and the like in existing programs keep working),
then each class raised for real through the public API: real SQLite files and
the harness's real PostgreSQL server, a table dropped by another process for a
failing statement, a future schema version written into the migrations table.
Each test checks the exact class, that the old builtin still catches it, that
the message names the offending value (the phrases other suites match are kept)
and that the refused call changed nothing.

Backend-specific triggers (a file that is not a database, a closed port,
tenants) skip on the other backend.
"""

import contextlib
import importlib
import os
import socket
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

import cloaca
from conftest import CLUSTER_ROLES

WAIT = 60  # seconds: bound of waits that should end almost at once

#: Every class below CloacaError, with the builtins it must also be (the last
#: one is what the API raised for that failure before the hierarchy existed).
HIERARCHY = {
    "InvalidUrlError": (ValueError,),
    "DatabaseUnavailableError": (ConnectionError, ValueError),
    "SchemaVersionError": (ValueError,),
    "DatabaseError": (RuntimeError,),
    "InvalidWorkflowError": (ValueError,),
    "ConfigurationError": (ValueError,),
    "WorkflowNotFoundError": (ValueError,),
    "ExecutionNotFoundError": (KeyError,),
    "ExecutionStateError": (ValueError,),
    "IdempotencyKeyError": (ValueError,),
    "WaitTimeoutError": (TimeoutError,),
    "InvalidScheduleError": (ValueError,),
    "ScheduleNotFoundError": (ValueError, KeyError),
    "TenantError": (ValueError,),
    "RunnerShutDownError": (RuntimeError, ValueError),
    "RunnerCreationError": (ValueError, RuntimeError),
}
ALL_NAMES = ["CloacaError", *HIERARCHY]
BUILTINS = sorted({b for bases in HIERARCHY.values() for b in bases}, key=lambda b: b.__name__)

ACCEPTED_FORM = {"sqlite": ":memory:", "postgres": "postgresql://user"}


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def raises(name, *needles):
    """Expect exactly cloaca.<name>, caught as the builtin the API raised before
    (and an instance of every other builtin it must be), its message naming every needle.

    Yields pytest's ExceptionInfo.
    """
    builtins = HIERARCHY[name]
    with pytest.raises(builtins[-1]) as excinfo:
        yield excinfo
    error = excinfo.value
    expected = getattr(cloaca, name)
    # A DefaultRunner that cannot be created raises a class deriving from both
    # the specific class and RunnerCreationError (shown under the specific name).
    created = isinstance(error, cloaca.RunnerCreationError) and type(error).__bases__[0] is expected
    assert type(error) is expected or created, f"{type(error).__qualname__} raised, not cloaca.{name}: {error}"
    assert isinstance(error, cloaca.CloacaError)
    for builtin in builtins:
        assert isinstance(error, builtin), f"cloaca.{name} is not a {builtin.__name__}"
    message = str(error)
    for needle in needles:
        assert needle in message, f"{needle!r} not named in cloaca.{name}: {message!r}"


def sqlite_url(path, query: str = "") -> str:
    """sqlite:///abs/path.db (the documented form), with an optional query string."""
    url = "sqlite:///" + str(path).lstrip("/")
    return f"{url}?{query}" if query else url


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(url: str, name: str) -> str:
    """`url` naming another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def sql_str(value: str) -> str:
    """A SQL string literal (the values here are uuids and generated names)."""
    return "'" + value.replace("'", "''") + "'"


def quiet_runner(url):
    """A runner that fires no cron ticks: for schedule bookkeeping only."""
    return cloaca.DefaultRunner.with_config(url, cloaca.DefaultRunnerConfig(enable_cron_scheduling=False))


def define_marking_workflow(name):
    """Register a one-task workflow that marks its context."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="mark")
        def mark(ctx):
            ctx.set("marked", True)
            return ctx


def marker(task_id, dependencies):
    """Decorate a task `task_id` with `dependencies`; call inside a WorkflowBuilder block."""

    def run(ctx):
        ctx.set(task_id, True)
        return ctx

    run.__name__ = run.__qualname__ = task_id
    return cloaca.task(id=task_id, dependencies=list(dependencies))(run)


def build(name, tasks):
    """Build a workflow of marker tasks ({task_id: [dependency ids]}) in a `with` block."""
    with cloaca.WorkflowBuilder(name) as builder:
        for task_id, deps in tasks.items():
            marker(task_id, deps)
            builder.add_task(task_id)
        return builder.build()


def cloaca_tables(backend, url, db_query) -> set:
    if backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    return {row[0] for row in db_query(url, sql)}


MIGRATIONS_SQL = "SELECT version, name, applied_at FROM cloaca_schema_migrations ORDER BY version"


@pytest.fixture
def runner(fresh_database_url):
    with quiet_runner(fresh_database_url) as runner:
        yield runner


# --------------------------------------------------------------------------- the hierarchy


class TestHierarchy:
    @pytest.mark.parametrize("name", ALL_NAMES)
    def test_exported_as_an_exception_class(self, backend, name):
        assert name in cloaca.__all__, name
        cls = getattr(cloaca, name)
        assert isinstance(cls, type) and issubclass(cls, Exception), cls
        assert cls.__name__ == name
        # the dispatcher re-exports the backend's class itself
        assert getattr(importlib.import_module(f"cloaca_{backend}"), name) is cls

    @pytest.mark.parametrize("name", ALL_NAMES)
    def test_has_its_own_docstring(self, name):
        doc = getattr(cloaca, name).__doc__
        assert isinstance(doc, str) and doc.strip(), f"cloaca.{name} has no docstring"
        inherited = {Exception.__doc__, *(b.__doc__ for b in BUILTINS)}
        assert doc not in inherited, f"cloaca.{name} shows a builtin's docstring: {doc!r}"

    @pytest.mark.parametrize("name", list(HIERARCHY))
    def test_is_a_cloaca_error_and_its_old_builtins(self, name):
        cls = getattr(cloaca, name)
        assert issubclass(cls, cloaca.CloacaError)
        for builtin in HIERARCHY[name]:
            assert issubclass(cls, builtin), f"cloaca.{name} is not a {builtin.__name__}"

    @pytest.mark.parametrize("name", list(HIERARCHY))
    def test_is_no_builtin_it_was_not_before(self, name):
        """E.g. a KeyError kind is not a ValueError: `except ValueError` keeps meaning what it meant."""
        cls = getattr(cloaca, name)
        for builtin in BUILTINS:
            if not any(issubclass(b, builtin) for b in HIERARCHY[name]):
                assert not issubclass(cls, builtin), f"cloaca.{name} is also a {builtin.__name__}"

    def test_the_root_is_only_an_exception(self):
        root = cloaca.CloacaError
        assert issubclass(root, Exception)
        for builtin in BUILTINS:
            assert not issubclass(root, builtin), f"cloaca.CloacaError is a {builtin.__name__}"
        for name in HIERARCHY:
            assert not issubclass(root, getattr(cloaca, name)), name

    def test_the_kinds_are_distinct_classes(self):
        classes = {name: getattr(cloaca, name) for name in HIERARCHY}
        assert len(set(classes.values())) == len(classes)
        for name, cls in classes.items():
            for other_name, other in classes.items():
                if name != other_name:
                    assert not issubclass(cls, other), f"cloaca.{name} is a subclass of cloaca.{other_name}"


# --------------------------------------------------------------------------- InvalidUrlError

BAD_URLS = {
    # (url, what else the message names); "{tmp}" is the test's empty temporary directory
    "sqlite": [
        ("postgresql://user:secret@localhost:5432/app", "postgres"),
        ("postgres://localhost/app", "postgres"),
        ("not a url", ACCEPTED_FORM["sqlite"]),
        ("mysql://h/db", ACCEPTED_FORM["sqlite"]),
        ("sqlite://", ACCEPTED_FORM["sqlite"]),
        ("sqlite://{tmp}/x.db?colour=red", "colour"),
        ("sqlite://{tmp}/x.db?_synchronous=sometimes", "sometimes"),
    ],
    "postgres": [
        ("sqlite://{tmp}/x.db", "sqlite"),
        ("sqlite://:memory:", "sqlite"),
        ("not a url", ACCEPTED_FORM["postgres"]),
        ("mysql://h/db", ACCEPTED_FORM["postgres"]),
        ("postgresql://", ACCEPTED_FORM["postgres"]),
    ],
}


def _bad_url_cases():
    return [
        pytest.param(case_backend, url, needle, id=f"{case_backend}:{url}")
        for case_backend, cases in BAD_URLS.items()
        for url, needle in cases
    ]


class TestInvalidUrl:
    @pytest.mark.parametrize(
        "open_runner",
        [cloaca.DefaultRunner, lambda url: cloaca.DefaultRunner.with_config(url, cloaca.DefaultRunnerConfig())],
        ids=["DefaultRunner", "with_config"],
    )
    @pytest.mark.parametrize("case_backend, url_template, needle", _bad_url_cases())
    def test_a_url_the_backend_cannot_use(
        self, backend, tmp_path, monkeypatch, open_runner, case_backend, url_template, needle
    ):
        if backend != case_backend:
            pytest.skip(f"a {case_backend}-backend case")
        monkeypatch.chdir(tmp_path)  # a relative URL wrongly accepted creates nothing elsewhere
        url = url_template.format(tmp=tmp_path)
        with raises("InvalidUrlError", url, f"{backend} backend", needle):
            open_runner(url).shutdown()
        assert list(tmp_path.iterdir()) == [], "a refused URL must not create a database"

    @pytest.mark.usefixtures("postgres_only")
    @pytest.mark.parametrize(
        "url",
        ["postgresql://localhost/app?colour=red", "postgresql://localhost:notaport/app"],
        ids=["unknown-option", "port-not-a-number"],
    )
    def test_a_postgres_url_the_driver_cannot_read(self, url):
        with raises("InvalidUrlError", url):
            cloaca.DefaultRunner(url).shutdown()

    @pytest.mark.usefixtures("postgres_only")
    def test_database_admin_needs_a_postgres_url(self, tmp_path):
        url = sqlite_url(tmp_path / "admin.db")
        with raises("InvalidUrlError", url):
            cloaca.DatabaseAdmin(url)
        assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- DatabaseUnavailableError


def _not_a_database(tmp_path):
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not sqlite\0" + os.urandom(8192))
    return path, ""


def _missing_directory(tmp_path):
    return tmp_path / "no" / "such" / "dir" / "cloaca.db", ""


def _a_directory(tmp_path):
    path = tmp_path / "a-directory"
    path.mkdir()
    return path, ""


def _read_only_missing_file(tmp_path):
    return tmp_path / "absent.db", "mode=ro"


UNAVAILABLE_FILES = {
    "not-a-database": _not_a_database,
    "missing-directory": _missing_directory,
    "a-directory": _a_directory,
    "read-only-missing-file": _read_only_missing_file,
}


def tree(root):
    """Every path under `root` with the bytes of each file (None for a directory)."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


@pytest.mark.usefixtures("sqlite_only")
class TestDatabaseUnavailableSqlite:
    @pytest.mark.parametrize("make", UNAVAILABLE_FILES.values(), ids=UNAVAILABLE_FILES.keys())
    def test_a_file_that_cannot_be_opened(self, tmp_path, make):
        path, query = make(tmp_path)
        before = tree(tmp_path)
        with raises("DatabaseUnavailableError", str(path)):
            cloaca.DefaultRunner(sqlite_url(path, query))
        assert tree(tmp_path) == before, "a database that could not be opened was changed"

    def test_read_only_mode_on_a_database_that_needs_migrating(self, tmp_path, db_query):
        path = tmp_path / "plain.db"
        db_query(sqlite_url(path), "CREATE TABLE unrelated (v TEXT)", must_exist=False)
        before = path.read_bytes()
        with raises("DatabaseUnavailableError", str(path), "read-only"):
            cloaca.DefaultRunner(sqlite_url(path, "mode=ro"))
        assert path.read_bytes() == before
        assert db_query(sqlite_url(path), "SELECT name FROM sqlite_master WHERE type = 'table'") == [("unrelated",)]


@pytest.mark.usefixtures("postgres_only")
class TestDatabaseUnavailablePostgres:
    def test_a_server_that_does_not_answer(self):
        port = closed_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with raises("DatabaseUnavailableError", f"127.0.0.1:{port}"):
            cloaca.DefaultRunner(url)
        with raises("DatabaseUnavailableError", f"127.0.0.1:{port}"):
            cloaca.DefaultRunner.with_schema(url, "tenant_a")  # a good name gets as far as connecting
        with raises("DatabaseUnavailableError", f"127.0.0.1:{port}"):
            cloaca.DatabaseAdmin(url)

    def test_a_database_the_server_refuses(self, database_url, db_query):
        name = f"cloaca_missing_{uuid.uuid4().hex[:12]}"
        with raises("DatabaseUnavailableError", name):
            cloaca.DefaultRunner(with_database(database_url, name))
        assert db_query(database_url, f"SELECT count(*) FROM pg_database WHERE datname = {sql_str(name)}") == [("0",)]


# --------------------------------------------------------------------------- SchemaVersionError


class TestSchemaVersion:
    def test_a_schema_newer_than_this_cloaca_is_refused_and_kept(self, backend, fresh_database_url, db_query):
        with cloaca.DefaultRunner(fresh_database_url):
            pass
        db_query(
            fresh_database_url,
            "INSERT INTO cloaca_schema_migrations (version, name, applied_at) VALUES (999, 'from a newer cloaca', 1)",
        )
        migrations = db_query(fresh_database_url, MIGRATIONS_SQL)
        tables = cloaca_tables(backend, fresh_database_url, db_query)

        with raises("SchemaVersionError", "999"):
            cloaca.DefaultRunner(fresh_database_url)
        with raises("SchemaVersionError", "999"):
            quiet_runner(fresh_database_url)

        assert db_query(fresh_database_url, MIGRATIONS_SQL) == migrations
        assert cloaca_tables(backend, fresh_database_url, db_query) == tables

        # only the version was in the way
        db_query(fresh_database_url, "DELETE FROM cloaca_schema_migrations WHERE version = 999")
        with cloaca.DefaultRunner(fresh_database_url) as runner:
            assert runner.list_executions() == []


# --------------------------------------------------------------------------- DatabaseError


class TestDatabaseError:
    def test_a_statement_on_a_table_another_process_dropped(self, backend, fresh_database_url, db_query, workflow_name):
        """The executions table is dropped behind an open runner's back (by another
        process: psql, or a python with its own sqlite3), so its next read fails."""
        define_marking_workflow(workflow_name)
        with quiet_runner(fresh_database_url) as runner:
            done = runner.execute(workflow_name, {"n": 1})
            assert done.status == "Completed", done.error_message

            drop = "DROP TABLE cloaca_executions" + (" CASCADE" if backend == "postgres" else "")
            db_query(fresh_database_url, drop)
            assert "cloaca_executions" not in cloaca_tables(backend, fresh_database_url, db_query)

            with raises("DatabaseError", "cloaca_executions"):
                runner.list_executions()
            # a failed read is not a missing execution
            with raises("DatabaseError", "cloaca_executions"):
                runner.get_execution(done.execution_id)
            with raises("DatabaseError"):
                runner.list_executions(workflow_name=workflow_name, status="Completed")


# --------------------------------------------------------------------------- InvalidWorkflowError


class TestInvalidWorkflow:
    def test_a_cycle_names_the_tasks_in_it(self, workflow_name):
        tasks = {"outside": [], "alpha": ["gamma", "outside"], "beta": ["alpha"], "gamma": ["beta"]}
        with raises("InvalidWorkflowError", "alpha", "beta", "gamma") as excinfo:
            build(workflow_name, tasks)
        assert "cycle" in str(excinfo.value).lower()

    def test_a_self_dependency(self, workflow_name):
        with raises("InvalidWorkflowError", "ouroboros"):
            build(workflow_name, {"ouroboros": ["ouroboros"]})

    def test_a_cycle_found_when_leaving_the_block(self, workflow_name):
        with raises("InvalidWorkflowError", "ping", "pong"):
            with cloaca.WorkflowBuilder(workflow_name):
                marker("ping", ["pong"])
                marker("pong", ["ping"])

    def test_an_unknown_dependency_names_task_and_dependency(self, workflow_name):
        with raises("InvalidWorkflowError", "needy", "ghost_task"):
            build(workflow_name, {"present": [], "needy": ["present", "ghost_task"]})

    def test_no_tasks(self, workflow_name):
        with raises("InvalidWorkflowError", "cannot be empty"):
            cloaca.WorkflowBuilder(workflow_name).build()
        with raises("InvalidWorkflowError", "cannot be empty"):
            with cloaca.WorkflowBuilder(workflow_name) as builder:
                builder.description("nothing inside")

    @pytest.mark.parametrize(("keyword", "value"), [("retry_backoff", "sideways"), ("retry_condition", "")])
    def test_a_retry_setting_that_is_not_accepted(self, keyword, value):
        # Refused when the decorator is made, before it meets a function or a workflow.
        with raises("InvalidWorkflowError", f"{keyword}={value!r}".replace("'", '"')):
            cloaca.task(**{keyword: value})

    def test_a_refused_workflow_is_not_registered(self, workflow_name, runner):
        with raises("InvalidWorkflowError", "needy", "ghost_task"):
            with cloaca.WorkflowBuilder(workflow_name):
                marker("needy", ["ghost_task"])
        with raises("WorkflowNotFoundError", workflow_name):
            runner.execute(workflow_name)
        assert runner.list_executions() == []


# --------------------------------------------------------------------------- ConfigurationError

_DEFAULTS = cloaca.DefaultRunnerConfig().to_dict()
NUMBER_SETTINGS = [name for name, value in _DEFAULTS.items() if type(value) in (int, float)]
BOOL_SETTINGS = [name for name, value in _DEFAULTS.items() if type(value) is bool]


class TestConfiguration:
    def test_there_are_settings_to_check(self):
        assert "max_concurrent_tasks" in NUMBER_SETTINGS and "enable_recovery" in BOOL_SETTINGS

    @pytest.mark.parametrize(
        ("setting", "value"),
        # 0 is a valid outage allowance (fail at once); every other number must be above 0.
        [(s, v) for s in NUMBER_SETTINGS for v in (0, -1) if (s, v) != ("database_outage_timeout_seconds", 0)],
    )
    def test_a_value_out_of_range(self, setting, value):
        with raises("ConfigurationError", f"{setting}={value}"):
            cloaca.DefaultRunnerConfig(**{setting: value})
        config = cloaca.DefaultRunnerConfig()
        with raises("ConfigurationError", f"{setting}={value}"):
            setattr(config, setting, value)
        assert config.to_dict() == _DEFAULTS, "a refused value was kept"

    @pytest.mark.parametrize(
        "setting, value",
        [
            ("max_concurrent_tasks", "4"),
            ("task_timeout_seconds", [300]),
            ("enable_recovery", 1),
            ("enable_recovery", None),
        ],
        ids=["str-for-int", "list-for-int", "int-for-bool", "None-for-bool"],
    )
    def test_a_wrong_type_stays_a_plain_type_error(self, setting, value):
        for attempt in (
            lambda: cloaca.DefaultRunnerConfig(**{setting: value}),
            lambda: setattr(cloaca.DefaultRunnerConfig(), setting, value),
        ):
            with pytest.raises(TypeError) as excinfo:
                attempt()
            assert type(excinfo.value) is TypeError, f"{type(excinfo.value).__qualname__}: {excinfo.value}"
            assert setting in str(excinfo.value)


# --------------------------------------------------------------------------- WorkflowNotFoundError

UNKNOWN_WORKFLOW_CALLS = {
    "execute": lambda r, name: r.execute(name, {"x": 1}),
    "execute_async": lambda r, name: r.execute_async(name, {"x": 1}),
    "register_cron_workflow": lambda r, name: r.register_cron_workflow(name, "0 3 * * *"),
}


class TestWorkflowNotFound:
    @pytest.mark.parametrize("call", UNKNOWN_WORKFLOW_CALLS.values(), ids=UNKNOWN_WORKFLOW_CALLS.keys())
    def test_a_workflow_not_registered_in_this_process(self, runner, workflow_name, fresh_database_url, db_query, call):
        define_marking_workflow(workflow_name)
        missing = workflow_name + "_does_not_exist"
        # it names the missing workflow and lists the registered ones
        with raises("WorkflowNotFoundError", missing, workflow_name):
            call(runner, missing)
        assert runner.list_executions() == []
        assert runner.list_cron_schedules() == []
        assert db_query(fresh_database_url, "SELECT count(*) FROM cloaca_executions") == [("0",)]


# --------------------------------------------------------------------------- ExecutionNotFoundError


class TestExecutionNotFound:
    def test_an_id_not_in_the_database(self, runner, workflow_name):
        define_marking_workflow(workflow_name)
        done = runner.execute(workflow_name)
        unknown = str(uuid.uuid4())
        with raises("ExecutionNotFoundError", unknown):
            runner.get_execution(unknown)
        assert [r.execution_id for r in runner.list_executions()] == [done.execution_id]
        assert runner.get_execution(done.execution_id).status == "Completed"

    def test_an_id_of_another_database(self, backend, database_url, fresh_database_url, workflow_name, tmp_path):
        define_marking_workflow(workflow_name)
        other = sqlite_url(tmp_path / "other.db") if backend == "sqlite" else database_url
        with quiet_runner(other) as elsewhere:
            execution_id = elsewhere.execute(workflow_name).execution_id
        with quiet_runner(fresh_database_url) as runner, raises("ExecutionNotFoundError", execution_id):
            runner.get_execution(execution_id)


# --------------------------------------------------------------------------- WaitTimeoutError


class TestWaitTimeout:
    def test_the_run_goes_on_and_can_be_waited_for_again(self, runner, workflow_name):
        started, gate = threading.Event(), threading.Event()
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="gated")
            def gated(ctx):
                started.set()
                gate.wait(WAIT)
                ctx.set("gate", "opened" if gate.is_set() else "timed out")
                return ctx

        try:
            handle = runner.execute_async(workflow_name, {"k": 1})
            assert started.wait(WAIT), "the task never started"
            with raises("WaitTimeoutError", handle.execution_id, "0.2"):
                handle.wait(timeout=0.2)
            assert handle.status() == "Running"
            assert runner.get_execution(handle.execution_id).status == "Running"
        finally:
            gate.set()
        result = handle.wait(timeout=WAIT)
        assert result.status == "Completed", result.error_message
        assert result.final_context.to_dict() == {"k": 1, "gate": "opened"}


# --------------------------------------------------------------------------- schedules


@pytest.fixture
def scheduled(runner, workflow_name):
    """A runner with one registered workflow and one schedule of it."""
    define_marking_workflow(workflow_name)
    schedule_id = runner.register_cron_workflow(workflow_name, "0 3 * * *", "Europe/Berlin")
    return runner, workflow_name, schedule_id


BAD_SCHEDULES = [
    pytest.param("61 * * * *", "UTC", "61 * * * *", id="minute-61"),
    pytest.param("every day at noon", "UTC", "every day at noon", id="garbage"),
    pytest.param("@fortnightly", "UTC", "@fortnightly", id="unknown-nickname"),
    pytest.param("0 0 30 2 *", "UTC", "0 0 30 2 *", id="never-february-30"),
    pytest.param("0 3 * * *", "Mars/Olympus", "Mars/Olympus", id="unknown-time-zone"),
    pytest.param("0 3 * * *", "Europe/Berln", "Europe/Berln", id="misspelt-time-zone"),
]


class TestInvalidSchedule:
    @pytest.mark.parametrize("expression, zone, named", BAD_SCHEDULES)
    def test_register_and_update_refuse_it(self, scheduled, expression, zone, named):
        runner, workflow_name, schedule_id = scheduled
        before = runner.list_cron_schedules()
        with raises("InvalidScheduleError", named):
            runner.register_cron_workflow(workflow_name, expression, zone)
        with raises("InvalidScheduleError", named):
            runner.update_cron_schedule(schedule_id, expression, zone)
        assert runner.list_cron_schedules() == before, "a refused schedule changed the stored ones"


UNKNOWN_SCHEDULE_CALLS = {
    "get": lambda r, sid: r.get_cron_schedule(sid),
    "update": lambda r, sid: r.update_cron_schedule(sid, "0 4 * * *"),
    "update-with-timezone": lambda r, sid: r.update_cron_schedule(sid, "0 4 * * *", "UTC"),
    "disable": lambda r, sid: r.set_cron_schedule_enabled(sid, False),
    "enable": lambda r, sid: r.set_cron_schedule_enabled(sid, True),
    "delete": lambda r, sid: r.delete_cron_schedule(sid),
    "history": lambda r, sid: r.get_cron_execution_history(sid),
}


class TestScheduleNotFound:
    @pytest.mark.parametrize("call", UNKNOWN_SCHEDULE_CALLS.values(), ids=UNKNOWN_SCHEDULE_CALLS.keys())
    def test_an_id_that_does_not_exist(self, scheduled, call):
        runner, _, _ = scheduled
        before = runner.list_cron_schedules()
        unknown = str(uuid.uuid4())
        with raises("ScheduleNotFoundError", unknown):
            call(runner, unknown)
        assert runner.list_cron_schedules() == before

    def test_an_id_deleted_a_moment_ago(self, scheduled):
        runner, _, schedule_id = scheduled
        runner.delete_cron_schedule(schedule_id)
        with raises("ScheduleNotFoundError", schedule_id):
            runner.get_cron_schedule(schedule_id)
        with raises("ScheduleNotFoundError", schedule_id):
            runner.delete_cron_schedule(schedule_id)
        assert runner.list_cron_schedules() == []


# --------------------------------------------------------------------------- TenantError

#: Names every tenant call refuses, each shown as it is in the message.
BAD_TENANT_NAMES = ["Tenant", "tenant-name", "1abc", "pg_tenant"]
# with_schema folds upper case (PostgreSQL folds unquoted names); TenantConfig does not.
BAD_SCHEMA_NAMES = [name for name in BAD_TENANT_NAMES if name != "Tenant"]


def schemas(url, db_query) -> set:
    return {row[0] for row in db_query(url, "SELECT nspname FROM pg_namespace")}


def roles(url, db_query) -> set:
    return {row[0] for row in db_query(url, "SELECT rolname FROM pg_roles")}


@pytest.fixture
def tenants_backend(backend):
    if backend != "postgres":
        pytest.skip("multi-tenancy is a postgres feature: the sqlite backend has no tenant classes")


@CLUSTER_ROLES
@pytest.mark.usefixtures("tenants_backend")
class TestTenant:
    @pytest.mark.parametrize("name", BAD_SCHEMA_NAMES)
    def test_with_schema_refuses_a_bad_schema_name_before_connecting(self, name):
        port = closed_port()  # the name is checked first: the error is about it
        with raises("TenantError", name) as excinfo:
            cloaca.DefaultRunner.with_schema(f"postgresql://postgres@127.0.0.1:{port}/postgres", name)
        assert f"127.0.0.1:{port}" not in str(excinfo.value)

    def test_with_schema_refusals_change_nothing(self, fresh_database_url, db_query):
        before = schemas(fresh_database_url, db_query), roles(fresh_database_url, db_query)
        for name in BAD_SCHEMA_NAMES:
            with raises("TenantError", name):
                cloaca.DefaultRunner.with_schema(fresh_database_url, name)
        assert (schemas(fresh_database_url, db_query), roles(fresh_database_url, db_query)) == before

    @pytest.mark.parametrize("name", BAD_TENANT_NAMES)
    def test_tenant_config_refuses_a_bad_schema_name_or_username(self, name):
        with raises("TenantError", name):
            cloaca.TenantConfig(name, "tenant_user")
        with raises("TenantError", name):
            cloaca.TenantConfig("tenant_schema", name)

    @pytest.mark.parametrize("password", ["", "secret\0value"], ids=["empty", "nul"])
    def test_tenant_config_refuses_a_bad_password_without_showing_it(self, password):
        with raises("TenantError", "password") as excinfo:
            cloaca.TenantConfig("tenant_schema", "tenant_user", password)
        if password:
            assert password not in str(excinfo.value) and "secret" not in str(excinfo.value)

    def test_create_tenant_refuses_an_existing_role_and_creates_nothing(
        self, database_url, fresh_database_url, db_query
    ):
        admin = cloaca.DatabaseAdmin(fresh_database_url)
        existing_role = urlsplit(database_url).username or "postgres"
        assert existing_role in roles(fresh_database_url, db_query)
        schema = f"cs_err_{uuid.uuid4().hex[:8]}"
        before = roles(fresh_database_url, db_query)
        with raises("TenantError", existing_role):
            admin.create_tenant(cloaca.TenantConfig(schema, existing_role, "a given password"))
        assert schema not in schemas(fresh_database_url, db_query)
        assert roles(fresh_database_url, db_query) == before

    def test_remove_tenant_refuses_what_it_did_not_create(self, fresh_database_url, db_query):
        admin = cloaca.DatabaseAdmin(fresh_database_url)
        with cloaca.DefaultRunner.with_schema(fresh_database_url, "made_by_runner"):
            pass
        before = schemas(fresh_database_url, db_query), roles(fresh_database_url, db_query)
        with raises("TenantError", "made_by_runner"):
            admin.remove_tenant("made_by_runner", "nobody_at_all")
        with raises("TenantError", "Bad-Name"):
            admin.remove_tenant("Bad-Name", "nobody_at_all")
        assert (schemas(fresh_database_url, db_query), roles(fresh_database_url, db_query)) == before


# --------------------------------------------------------------------------- ExecutionStateError


class TestExecutionState:
    @pytest.mark.parametrize("action", ["cancel", "pause", "resume", "retry"])
    def test_steering_a_completed_execution_is_refused_and_changes_nothing(
        self, fresh_database_url, workflow_name, db_query, action
    ):
        define_marking_workflow(workflow_name)
        with quiet_runner(fresh_database_url) as runner:
            result = runner.execute(workflow_name)
            events = [e.to_dict() for e in runner.get_execution_events(result.execution_id)]
            with raises("ExecutionStateError", result.execution_id, "Completed", action):
                getattr(runner, f"{action}_execution")(result.execution_id)
            assert runner.get_execution(result.execution_id).status == "Completed"
            assert [e.to_dict() for e in runner.get_execution_events(result.execution_id)] == events
        rows = db_query(fresh_database_url, "SELECT COUNT(*) FROM cloaca_execution_events")
        assert int(rows[0][0]) == 0, "a refused request stored an event"


# --------------------------------------------------------------------------- IdempotencyKeyError


class TestIdempotencyKey:
    def test_a_key_of_another_workflow_is_refused_and_starts_nothing(self, fresh_database_url, workflow_name):
        define_marking_workflow(workflow_name)
        define_marking_workflow(workflow_name + "_b")
        with quiet_runner(fresh_database_url) as runner:
            runner.execute(workflow_name, idempotency_key="invoice-9")
            with raises("IdempotencyKeyError", "invoice-9", workflow_name, workflow_name + "_b"):
                runner.execute(workflow_name + "_b", idempotency_key="invoice-9")
            assert len(runner.list_executions()) == 1


# --------------------------------------------------------------------------- RunnerShutDownError

SHUT_DOWN_CALLS = {
    "execute": lambda r, wf, sid: r.execute(wf, {"x": 1}),
    "execute_async": lambda r, wf, sid: r.execute_async(wf, {"x": 1}),
    "get_execution": lambda r, wf, sid: r.get_execution(str(uuid.uuid4())),
    "list_executions": lambda r, wf, sid: r.list_executions(),
    "register_cron_workflow": lambda r, wf, sid: r.register_cron_workflow(wf, "0 4 * * *"),
    "list_cron_schedules": lambda r, wf, sid: r.list_cron_schedules(),
    "get_cron_schedule": lambda r, wf, sid: r.get_cron_schedule(sid),
    "update_cron_schedule": lambda r, wf, sid: r.update_cron_schedule(sid, "0 5 * * *"),
    "set_cron_schedule_enabled": lambda r, wf, sid: r.set_cron_schedule_enabled(sid, False),
    "delete_cron_schedule": lambda r, wf, sid: r.delete_cron_schedule(sid),
    "get_cron_execution_history": lambda r, wf, sid: r.get_cron_execution_history(sid),
    "get_cron_execution_stats": lambda r, wf, sid: r.get_cron_execution_stats("2026-01-01T00:00:00Z"),
    "get_execution_tasks": lambda r, wf, sid: r.get_execution_tasks(str(uuid.uuid4())),
    "get_execution_events": lambda r, wf, sid: r.get_execution_events(str(uuid.uuid4())),
    "cancel_execution": lambda r, wf, sid: r.cancel_execution(str(uuid.uuid4())),
    "pause_execution": lambda r, wf, sid: r.pause_execution(str(uuid.uuid4())),
    "resume_execution": lambda r, wf, sid: r.resume_execution(str(uuid.uuid4())),
    "retry_execution": lambda r, wf, sid: r.retry_execution(str(uuid.uuid4())),
    "render_execution": lambda r, wf, sid: r.render_execution(str(uuid.uuid4())),
    "get_database_info": lambda r, wf, sid: r.get_database_info(),
}


class TestRunnerShutDown:
    @pytest.mark.parametrize("call", SHUT_DOWN_CALLS.values(), ids=SHUT_DOWN_CALLS.keys())
    def test_any_call_after_shutdown(self, fresh_database_url, workflow_name, call):
        define_marking_workflow(workflow_name)
        runner = quiet_runner(fresh_database_url)
        schedule_id = runner.register_cron_workflow(workflow_name, "0 3 * * *")
        schedules = runner.list_cron_schedules()
        runner.shutdown()

        with raises("RunnerShutDownError", "shut down"):
            call(runner, workflow_name, schedule_id)
        runner.shutdown()  # still idempotent

        with quiet_runner(fresh_database_url) as again:
            assert again.list_executions() == [], "a call on a shut-down runner started an execution"
            assert again.list_cron_schedules() == schedules, "a call on a shut-down runner changed a schedule"

    def test_after_the_with_block(self, fresh_database_url, workflow_name):
        define_marking_workflow(workflow_name)
        with quiet_runner(fresh_database_url) as runner:
            assert runner.execute(workflow_name).status == "Completed"
        with raises("RunnerShutDownError", "shut down"):
            runner.execute(workflow_name)
        try:
            runner.list_executions()
        except RuntimeError as error:  # what a caller may have written for it
            assert type(error) is cloaca.RunnerShutDownError
        else:
            pytest.fail("list_executions() on a shut-down runner did not raise")
