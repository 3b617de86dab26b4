"""Bad storage input is refused with a ValueError that names it, and leaves it untouched;
migrations are idempotent and never lose rows.

sqlite: a read-only file, a file that is not a SQLite database, a directory, a
path whose directory does not exist. postgres: a server that does not answer, a
database that does not exist. Both: opening a database again changes nothing
and keeps what an earlier runner wrote.
"""

import json
import os
import socket
import sqlite3
import subprocess
import uuid
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

import cloaca

REQUIRED_TABLES = {"cloaca_schema_migrations", "cloaca_executions", "cloaca_task_executions"}


def sqlite_url(path, query: str = "") -> str:
    """sqlite:///abs/path.db (the documented form), with an optional query string."""
    url = "sqlite:///" + str(path).lstrip("/")
    return f"{url}?{query}" if query else url


def sqlite_tables(path) -> list:
    """Table names in a SQLite file, read without changing it."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def make_plain_sqlite_database(path) -> None:
    """A valid SQLite database that holds no cloaca schema (so opening it must migrate)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE unrelated (v TEXT)")
        db.execute("INSERT INTO unrelated VALUES ('keep me')")
        db.commit()


# ---------------------------------------------------------------------------
# sqlite files
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("sqlite_only")
class TestSqliteFiles:
    @pytest.mark.skipif(
        os.geteuid() == 0,
        reason="running as root, which writes through file permissions, so "
        "chmod 0o444 does not make the file read-only for this process; "
        "the ?mode=ro tests below cover read-only files as root",
    )
    def test_read_only_file(self, tmp_path):
        path = tmp_path / "existing.db"
        with cloaca.DefaultRunner(sqlite_url(path)):
            pass  # now a cloaca database
        before = path.read_bytes()
        os.chmod(path, 0o444)
        try:
            with pytest.raises(ValueError) as excinfo:
                cloaca.DefaultRunner(sqlite_url(path))
            message = str(excinfo.value)
            assert str(path) in message
            assert "read-only" in message
            assert path.read_bytes() == before
        finally:
            os.chmod(path, 0o644)

    @pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged variant above runs instead")
    def test_read_only_file_opened_by_an_unprivileged_process(self, run_python):
        """As root, the chmod case runs in a child that imports cloaca and then drops
        to the `nobody` user, for whom the file permissions hold."""
        import shutil
        import stat
        import tempfile

        directory = tempfile.mkdtemp(prefix="cloaca-read-only-")
        try:
            os.chmod(directory, 0o755)
            path = os.path.join(directory, "existing.db")
            with cloaca.DefaultRunner(sqlite_url(path)):
                pass  # now a cloaca database
            before = Path(path).read_bytes()
            os.chmod(path, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            done = run_python(
                "import os, cloaca\n"
                "os.setgid(65534); os.setuid(65534)  # nobody\n"
                "try:\n"
                f"    cloaca.DefaultRunner({sqlite_url(path)!r})\n"
                "except ValueError as e:\n"
                "    print('ValueError:', e)\n"
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith("ValueError:"), done.stdout + done.stderr
            assert path in done.stdout and "read-only" in done.stdout, done.stdout
            assert Path(path).read_bytes() == before
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def test_read_only_mode_on_a_database_that_needs_migrating(self, tmp_path):
        path = tmp_path / "plain.db"
        make_plain_sqlite_database(path)
        before = path.read_bytes()

        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner(sqlite_url(path, "mode=ro"))

        message = str(excinfo.value)
        assert str(path) in message
        assert "read-only" in message
        assert path.read_bytes() == before
        assert sqlite_tables(path) == ["unrelated"]

    def test_read_only_mode_on_a_missing_file(self, tmp_path):
        path = tmp_path / "absent.db"
        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner(sqlite_url(path, "mode=ro"))
        assert str(path) in str(excinfo.value)
        assert not path.exists()

    @pytest.mark.parametrize(
        "content",
        [
            b"this is not sqlite\0" + os.urandom(8192),
            ("A text file, not a database.\n" * 200).encode(),
        ],
        ids=["random-bytes", "text"],
    )
    def test_a_file_that_is_not_a_sqlite_database(self, tmp_path, content):
        path = tmp_path / "not-a-database.db"
        path.write_bytes(content)

        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner(sqlite_url(path))

        assert str(path) in str(excinfo.value)
        assert path.read_bytes() == content

    def test_a_directory(self, tmp_path):
        path = tmp_path / "a-directory"
        path.mkdir()
        (path / "inside.txt").write_text("untouched")

        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner(sqlite_url(path))

        assert str(path) in str(excinfo.value)
        assert path.is_dir()
        assert sorted(p.name for p in path.iterdir()) == ["inside.txt"]
        assert (path / "inside.txt").read_text() == "untouched"

    def test_a_path_whose_directory_does_not_exist(self, tmp_path):
        path = tmp_path / "no" / "such" / "dir" / "cloaca.db"

        with pytest.raises(ValueError) as excinfo:
            cloaca.DefaultRunner(sqlite_url(path))

        assert str(path) in str(excinfo.value)
        assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------------
# postgres servers
# ---------------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_in_subprocess(run_scenario, url):
    """Open a runner in another process (bounded by a timeout: a hang fails, not blocks)."""
    try:
        done = run_scenario("open_runner.py", url, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"opening a runner on {url} hung for 120 s instead of raising")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.usefixtures("postgres_only")
class TestPostgresServers:
    def test_a_server_that_does_not_answer(self, run_scenario):
        port = closed_port()
        outcome = open_in_subprocess(run_scenario, f"postgresql://postgres@127.0.0.1:{port}/postgres")
        assert outcome["opened"] is False, outcome
        assert outcome["is_value_error"], outcome
        assert f"127.0.0.1:{port}" in outcome["message"]

    def test_a_database_that_does_not_exist(self, database_url, run_scenario, db_query):
        name = f"cloaca_missing_{uuid.uuid4().hex[:12]}"
        parts = urlsplit(database_url)
        url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

        outcome = open_in_subprocess(run_scenario, url)

        assert outcome["opened"] is False, outcome
        assert outcome["is_value_error"], outcome
        assert name in outcome["message"]
        assert db_query(database_url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == [("0",)]


# ---------------------------------------------------------------------------
# migrations, both backends
# ---------------------------------------------------------------------------


def cloaca_tables(backend, url, db_query) -> set:
    if backend == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    return {row[0] for row in db_query(url, sql)}


MIGRATIONS_SQL = "SELECT version, name, applied_at FROM cloaca_schema_migrations ORDER BY version"


class TestMigrations:
    def test_opening_a_database_again_changes_nothing(self, backend, fresh_database_url, db_query):
        with cloaca.DefaultRunner(fresh_database_url):
            pass
        applied = db_query(fresh_database_url, MIGRATIONS_SQL)
        assert applied, "no migration was recorded"
        versions = [int(version) for version, _, _ in applied]
        assert versions == sorted(set(versions))
        assert all(name for _, name, _ in applied)
        assert all(int(applied_at) > 0 for _, _, applied_at in applied)
        assert REQUIRED_TABLES <= cloaca_tables(backend, fresh_database_url, db_query)

        for _ in range(2):
            with cloaca.DefaultRunner(fresh_database_url):
                pass
            assert db_query(fresh_database_url, MIGRATIONS_SQL) == applied

    def test_two_processes_opening_a_new_database_at_once(self, fresh_database_url, run_scenario, db_query):
        """Runners started together (as scale-out deployments do) both migrate safely."""
        procs = [run_scenario.start("open_runner.py", fresh_database_url) for _ in range(2)]
        for proc in procs:
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a runner opening a new database hung\n{proc.output()}")
            assert proc.returncode == 0, proc.output()
            outcome = json.loads(proc.out_path.read_text())
            assert outcome == {"opened": True}, outcome
        applied = db_query(fresh_database_url, MIGRATIONS_SQL)
        versions = [version for version, _, _ in applied]
        assert versions and len(versions) == len(set(versions)), applied

    def test_rows_written_by_one_runner_survive_opening_by_another(self, fresh_database_url, db_query, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="first")
            def first(ctx):
                ctx.set("first", 1)
                return ctx

            @cloaca.task(id="second", dependencies=["first"])
            def second(ctx):
                ctx.set("second", ctx.get("first") + 1)
                return ctx

        with cloaca.DefaultRunner(fresh_database_url) as runner:
            result = runner.execute(workflow_name, {"kept": True})
        assert result.status == "Completed", result.error_message
        snapshot_sql = [
            f"SELECT * FROM cloaca_executions WHERE id = '{result.execution_id}'",
            f"SELECT * FROM cloaca_task_executions WHERE execution_id = '{result.execution_id}' ORDER BY task_id",
            MIGRATIONS_SQL,
        ]
        before = [db_query(fresh_database_url, sql) for sql in snapshot_sql]
        assert len(before[0]) == 1 and len(before[1]) == 2

        with cloaca.DefaultRunner(fresh_database_url) as again:
            seen = again.get_execution(result.execution_id)
            assert seen.status == "Completed"
            assert seen.final_context.to_dict() == {"kept": True, "first": 1, "second": 2}
            assert [r.execution_id for r in again.list_executions(workflow_name=workflow_name)] == [result.execution_id]

        assert [db_query(fresh_database_url, sql) for sql in snapshot_sql] == before
