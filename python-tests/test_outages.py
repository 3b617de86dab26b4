"""Database outages, for real: the engine waits them out, or says how long it waited.

PostgreSQL: the harness's own server is restarted (pg_ctl restart -m fast, and
-m immediate, a crash and recovery) or stopped in the middle of a chain. The
harness exports the server's pg_ctl command line in CLOACA_TEST_PG_CTL; with a
server of your own (CLOACA_TEST_POSTGRES_URL) these tests are skipped.

SQLite: another process holds the file under BEGIN EXCLUSIVE for longer than
the runner's busy_timeout.

Every task appends "<task_id>" to a side-effect file, so how often each task
really ran is counted outside the engine, and the database is read straight
from its tables.
"""

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

import cloaca
from conftest import psql, start_scale_workers

CHAIN = 20
STEP_SECONDS = 0.1


def pg_ctl(*args: str) -> None:
    """Runs the harness server's pg_ctl with `args` (waiting for it to finish); start gets the server's options."""
    control = json.loads(os.environ["CLOACA_TEST_PG_CTL"])
    options = ["-o", control["start_options"]] if args[0] == "start" else []
    done = subprocess.run([*control["command"], *args, *options], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"pg_ctl {' '.join(args)}: {done.stdout}{done.stderr}"


@pytest.fixture
def server_control(backend):
    """The harness's PostgreSQL server, which this test may restart or stop; started again at the end."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL server outage; the sqlite backend has no server")
    if "CLOACA_TEST_PG_CTL" not in os.environ:
        pytest.skip("the PostgreSQL server is not the harness's own (CLOACA_TEST_POSTGRES_URL): it is not restarted")
    yield pg_ctl
    # Whatever the test did, leave the server running for the rest of the suite.
    status = subprocess.run([*json.loads(os.environ["CLOACA_TEST_PG_CTL"])["command"], "status"], capture_output=True)
    if status.returncode != 0:
        pg_ctl("start", "-w", "-t", "60")


@pytest.fixture
def durable_database_url(fresh_database_url, database_url):
    """A fresh database whose commits wait for the WAL write, as on a server with default settings.

    The harness's cluster commits with synchronous_commit off (fast, but a crash
    loses the last moments); a crash test needs the durability a real server has.
    """
    name = fresh_database_url.rsplit("/", 1)[1]
    psql(database_url, f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    return fresh_database_url


def define_chain(name: str, ledger) -> None:
    """A chain s0 -> s1 -> ... of CHAIN tasks, each recording its run in `ledger` and counting."""
    with cloaca.WorkflowBuilder(name):
        previous = None
        for i in range(CHAIN):

            def step(ctx, task_id=f"s{i}"):
                with open(ledger, "a") as out:
                    out.write(task_id + "\n")
                time.sleep(STEP_SECONDS)
                ctx["count"] = ctx.get("count", 0) + 1
                return ctx

            step.__name__ = f"s{i}"
            previous = cloaca.task(id=f"s{i}", dependencies=[previous] if previous else [])(step)


def completed_tasks(db_query, url, execution_id) -> Counter:
    rows = db_query(
        url,
        f"SELECT task_id FROM cloaca_task_executions WHERE execution_id = '{execution_id}' AND status = 'completed'",
    )
    return Counter(task_id for (task_id,) in rows)


def ledger_runs(path) -> Counter:
    with open(path) as lines:
        return Counter(line.strip() for line in lines if line.strip())


def wait_for_runs(path, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and sum(ledger_runs(path).values()) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} task runs recorded in {path} after {timeout} s")


def outage_config(seconds: float) -> "cloaca.DefaultRunnerConfig":
    # Short leases: an attempt whose outcome is lost with the server runs again soon.
    return cloaca.DefaultRunnerConfig(database_outage_timeout_seconds=seconds, task_lease_seconds=3)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_in_the_middle_of_a_chain_is_waited_out(
    server_control, durable_database_url, db_query, workflow_name, tmp_path, mode
):
    fresh_database_url = durable_database_url
    ledger = tmp_path / "ledger"
    define_chain(workflow_name, ledger)
    with cloaca.DefaultRunner.with_config(fresh_database_url, outage_config(60)) as runner:
        handle = runner.execute_async(workflow_name, {})
        wait_for_runs(ledger, 4)
        server_control("restart", "-m", mode, "-w", "-t", "60")
        result = handle.wait(timeout=120)
        assert result.status == "Completed", result.error_message
        assert result.final_context.get("count") == CHAIN
        # A call made right after the outage works as well.
        again = runner.get_execution(handle.execution_id)
        assert again.status == "Completed"
    stored = completed_tasks(db_query, fresh_database_url, handle.execution_id)
    assert stored == Counter({f"s{i}": 1 for i in range(CHAIN)}), "each task recorded completed exactly once"
    runs = ledger_runs(ledger)
    assert set(runs) == {f"s{i}" for i in range(CHAIN)}
    # A chain has one attempt in flight: at most that one runs twice.
    assert sum(runs.values()) <= CHAIN + 1, runs


def test_a_server_down_past_the_allowance_raises_and_the_runner_resumes(
    server_control, fresh_database_url, db_query, workflow_name, tmp_path
):
    ledger = tmp_path / "ledger"
    define_chain(workflow_name, ledger)
    allowance = 2.0
    with cloaca.DefaultRunner.with_config(fresh_database_url, outage_config(allowance)) as runner:
        handle = runner.execute_async(workflow_name, {})
        wait_for_runs(ledger, 3)
        server_control("stop", "-m", "fast", "-w", "-t", "60")
        try:
            started = time.monotonic()
            with pytest.raises(cloaca.DatabaseUnavailableError) as raised:
                handle.wait(timeout=120)
            waited = time.monotonic() - started
            message = str(raised.value)
            assert isinstance(raised.value, ConnectionError)
            assert "could not be reached" in message and "database_outage_timeout_seconds=2" in message, message
            host_port = fresh_database_url.split("@", 1)[1].split("/", 1)[0]
            assert host_port in message, message
            # The deadline is the allowance, not the wait's timeout of 120 s.
            assert waited < allowance + 10, waited
        finally:
            server_control("start", "-w", "-t", "60")
        # The runner kept trying in the background and finishes the execution.
        result = handle.wait(timeout=120)
        assert result.status == "Completed", result.error_message
    stored = completed_tasks(db_query, fresh_database_url, handle.execution_id)
    assert stored == Counter({f"s{i}": 1 for i in range(CHAIN)})
    assert sum(ledger_runs(ledger).values()) <= CHAIN + 1


def test_no_allowance_fails_at_once(server_control, fresh_database_url, workflow_name, tmp_path):
    define_chain(workflow_name, tmp_path / "ledger")
    with cloaca.DefaultRunner.with_config(fresh_database_url, outage_config(0)) as runner:
        execution_id = runner.execute_async(workflow_name, {}).execution_id
        server_control("stop", "-m", "fast", "-w", "-t", "60")
        try:
            with pytest.raises(cloaca.DatabaseUnavailableError, match="database_outage_timeout_seconds=0"):
                runner.get_execution(execution_id)
        finally:
            server_control("start", "-w", "-t", "60")


def test_a_wait_shorter_than_the_outage_ends_at_its_own_timeout(
    server_control, fresh_database_url, workflow_name, tmp_path
):
    ledger = tmp_path / "ledger"
    define_chain(workflow_name, ledger)
    with cloaca.DefaultRunner.with_config(fresh_database_url, outage_config(60)) as runner:
        handle = runner.execute_async(workflow_name, {})
        wait_for_runs(ledger, 2)
        server_control("stop", "-m", "fast", "-w", "-t", "60")
        try:
            started = time.monotonic()
            with pytest.raises(cloaca.WaitTimeoutError):
                handle.wait(timeout=1)
            # Its own 1 s, not the 60 s outage allowance.
            assert time.monotonic() - started < 30
        finally:
            server_control("start", "-w", "-t", "60")
        assert handle.wait(timeout=120).status == "Completed"


HOLD_EXCLUSIVE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
"""


def hold_exclusive(path, seconds: float) -> subprocess.Popen:
    """Another process holding `path` under BEGIN EXCLUSIVE for `seconds` (it prints "locked" once it has it)."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_EXCLUSIVE, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )


def test_sqlite_locked_by_another_process_past_busy_timeout_is_waited_out(backend, tmp_path, workflow_name):
    if backend != "sqlite":
        pytest.skip("a SQLite file lock")
    path = tmp_path / "locked.db"
    # busy_timeout of 100 ms: the lock below outlasts it twenty times over.
    url = "sqlite:///" + str(path).lstrip("/") + "?_busy_timeout=100"
    ledger = tmp_path / "ledger"
    define_chain(workflow_name, ledger)
    with cloaca.DefaultRunner.with_config(url, outage_config(30)) as runner:
        first = runner.execute(workflow_name, {})
        assert first.status == "Completed", first.error_message
        # Another process (its own SQLite library: see conftest.query_database) takes the file.
        locker = hold_exclusive(path, seconds=2)
        try:
            assert locker.stdout.readline().strip() == "locked"
            outcome = {}
            worker = threading.Thread(target=lambda: outcome.update(result=runner.execute(workflow_name, {})))
            worker.start()
            worker.join(timeout=120)
            assert not worker.is_alive(), "execute() did not return after the lock was released"
            assert outcome["result"].status == "Completed", outcome["result"].error_message
            assert locker.wait(timeout=30) == 0, "the locking process held its lock to the end"
        finally:
            locker.kill()
    assert ledger_runs(ledger) == Counter({f"s{i}": 2 for i in range(CHAIN)}), "each task ran once per execution"


def test_sqlite_locked_with_no_allowance_fails_at_once_naming_the_file(backend, tmp_path, workflow_name):
    if backend != "sqlite":
        pytest.skip("a SQLite file lock")
    path = tmp_path / "locked.db"
    url = "sqlite:///" + str(path).lstrip("/") + "?_busy_timeout=100"
    define_chain(workflow_name, tmp_path / "ledger")
    with cloaca.DefaultRunner.with_config(url, outage_config(0)) as runner:
        locker = hold_exclusive(path, seconds=5)
        try:
            assert locker.stdout.readline().strip() == "locked"
            with pytest.raises(cloaca.DatabaseUnavailableError) as raised:
                runner.execute_async(workflow_name, {})
            assert str(path) in str(raised.value), str(raised.value)
            assert "locked" in str(raised.value), str(raised.value)
        finally:
            locker.kill()
        assert runner.list_executions() == [], "the refused start stored nothing"


LOGGING_SCRIPT = """
import logging, subprocess, sys
import cloaca

url, path, workflow, hold, mode = sys.argv[1:6]
records = []


class Keep(logging.Handler):
    def emit(self, record):
        records.append((record.name, record.levelname, record.getMessage()))


if mode == "configured":
    logging.getLogger("cloaca").addHandler(Keep())
with cloaca.WorkflowBuilder(workflow):

    @cloaca.task()
    def only(ctx):
        return ctx


config = cloaca.DefaultRunnerConfig(database_outage_timeout_seconds=0.2, executor_poll_interval_ms=20)
with cloaca.DefaultRunner.with_config(url, config) as runner:
    locker = subprocess.Popen([sys.executable, "-c", hold, path, "1.5"], stdout=subprocess.PIPE, text=True)
    locker.stdout.readline()
    locker.wait()
print(repr(records))
"""


def test_background_failures_go_to_the_cloaca_logger(backend, tmp_path, workflow_name):
    """Nothing on stderr by default; WARNING records on logger cloaca.runner once logging is configured."""
    if backend != "sqlite":
        pytest.skip("one backend is enough: the reporting path is the same")
    script = tmp_path / "logging_script.py"
    script.write_text(LOGGING_SCRIPT)
    path = tmp_path / "log.db"
    url = "sqlite:///" + str(path).lstrip("/") + "?_busy_timeout=50"

    def run(mode):
        done = subprocess.run(
            [sys.executable, str(script), url, str(path), workflow_name, HOLD_EXCLUSIVE, mode],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done

    quiet = run("plain")
    assert "cloaca" not in quiet.stderr, f"a library prints nothing unless logging is configured: {quiet.stderr}"
    assert quiet.stdout.strip() == "[]"
    logged = eval(run("configured").stdout)  # the script's own repr() of a list of tuples
    assert logged, "a database locked past the allowance is reported"
    names = {name for name, _, _ in logged}
    assert names == {"cloaca.runner"}, names
    assert all(level == "WARNING" for _, level, _ in logged), logged
    assert any("could not be reached" in message for _, _, message in logged), logged


@pytest.fixture
def small_filesystem(backend, tmp_path):
    """A 4 MB tmpfs mounted for this test (root only), unmounted afterwards."""
    if backend != "sqlite":
        pytest.skip("a full disk under a SQLite file; a PostgreSQL server's disk is its own")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory) -> "os.PathLike":
    """Fills the filesystem of `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    # Unbuffered: every write reaches the filesystem, and closing flushes nothing.
    with open(filler, "wb", buffering=0) as out:
        for size in (65536, 1):
            try:
                while out.write(b"\0" * size):
                    pass
            except OSError:
                pass
    return filler


def test_sqlite_on_a_full_disk_says_so_keeps_its_file_intact_and_carries_on(
    small_filesystem, db_query, workflow_name, tmp_path
):
    path = small_filesystem / "cloaca.db"
    url = "sqlite:///" + str(path).lstrip("/")
    ledger = tmp_path / "ledger"
    define_chain(workflow_name, ledger)
    with cloaca.DefaultRunner.with_config(url, outage_config(30)) as runner:
        earlier = runner.execute(workflow_name, {})
        assert earlier.status == "Completed", earlier.error_message
        filler = fill(small_filesystem)

        # A call that waits less than the disk stays full says what is wrong, and where.
        impatient = cloaca.DefaultRunnerConfig(database_outage_timeout_seconds=1)
        with cloaca.DefaultRunner.with_config(url, impatient) as other:
            with pytest.raises(cloaca.DatabaseUnavailableError) as raised:
                other.execute_async(workflow_name, {})
        message = str(raised.value)
        assert str(path) in message and "full" in message, message

        # Earlier executions stay readable on the full disk.
        assert runner.get_execution(earlier.execution_id).status == "Completed"

        # A run started while the disk is full waits, and finishes once space is freed.
        outcome = {}
        starter = threading.Thread(target=lambda: outcome.update(result=runner.execute(workflow_name, {})))
        starter.start()
        time.sleep(1.5)
        assert starter.is_alive(), "the run waits while the disk is full"
        os.remove(filler)
        starter.join(timeout=120)
        assert not starter.is_alive()
        assert outcome["result"].status == "Completed", outcome["result"].error_message
    assert db_query(url, "PRAGMA integrity_check") == [("ok",)]
    assert ledger_runs(ledger) == Counter({f"s{i}": 2 for i in range(CHAIN)})


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_server_restart_during_a_fan_out_run_by_three_processes(
    server_control, durable_database_url, db_query, workflow_name, tmp_path, run_scenario, wait_until, mode
):
    """Three runner processes (scenarios/scale_worker.py) share a root, 200 independent tasks and a join."""
    url = durable_database_url
    tasks = 200
    task_ids = ["root", *(f"m{i:03d}" for i in range(tasks)), "join"]
    side_file = tmp_path / "side-effects.txt"
    side_file.touch()
    result_file = tmp_path / "result.json"
    common = ["--url", url, "--workflow", workflow_name, "--side-file", side_file, "--tasks", tasks, "--seconds", 240]
    workers, starter = start_scale_workers(run_scenario, wait_until, tmp_path, common, result_file)
    wait_until(lambda: len(side_file.read_text().splitlines()) >= 40, 120, "40 tasks to run", proc=starter)
    server_control("restart", "-m", mode, "-w", "-t", "60")
    wait_until(result_file.exists, 240, "the run to finish after the restart", proc=starter)
    for proc in [starter, *workers]:
        assert proc.wait(timeout=120) == 0, proc.output()
    result = json.loads(result_file.read_text())
    assert result["status"] == "Completed", result
    rows = db_query(url, "SELECT task_id, status FROM cloaca_task_executions")
    assert Counter(task_id for task_id, status in rows if status == "completed") == Counter(task_ids)
    runs = Counter(line.split()[0] for line in side_file.read_text().splitlines())
    assert set(runs) == set(task_ids)
    # In flight at the restart: at most every worker of the three runners (4 each).
    assert sum(runs.values()) <= len(task_ids) + 3 * 4, runs.most_common(5)


def test_many_submissions_complete_and_memory_stays_bounded(fresh_database_url, workflow_name, run_scenario):
    """Backpressure: 5,000 executions submitted with execute_async in a loop all complete.

    The submitting process keeps nothing per execution once its handle is
    dropped: its memory after all submissions is within a few MiB of what it
    was after the first tenth (one execution's bookkeeping would be 5,000 x).
    """
    done = run_scenario(
        "submit_many.py", "--url", fresh_database_url, "--workflow", workflow_name, "--count", 5000, timeout=600
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["completed"] == 5000, figures
    growth_kib = figures["rss_kib_after_all"] - figures["rss_kib_after_a_tenth"]
    assert growth_kib < 16 * 1024, figures
