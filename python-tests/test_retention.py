"""Retention, for real, on both backends: DefaultRunner.prune_executions and
the background pruner of execution_retention_days.

Every test opens its own fresh database, so that pruning "everything older
than now" touches nothing of another test. What is left is read straight
from the tables (db_query), not only through the engine.
"""

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

import cloaca

WAIT = 60  # seconds: bound of waits that should end within a few seconds
LATER = "2999-01-01T00:00:00Z"  # after every execution of these tests


def define(name, fail=False, gate=None):
    """A two-task workflow `name`; its second task raises with `fail`, waits for `gate` if given."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="first")
        def first(context):
            return context

        @cloaca.task(id="second", dependencies=["first"])
        def second(context):
            if gate is not None:
                gate.wait(WAIT)
            if fail:
                raise ValueError("asked to fail")
            return context


def open_runner(url, **settings):
    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False, **settings)
    return cloaca.DefaultRunner.with_config(url, config)


def run(runner, name, times):
    """Ids of `times` executions of `name`, run to their end."""
    return [runner.execute(name, {}).execution_id for _ in range(times)]


def counts(db_query, url):
    """(executions, task rows, cron history rows) in the database."""
    return tuple(
        int(db_query(url, f"SELECT COUNT(*) FROM {table}")[0][0])
        for table in ("cloaca_executions", "cloaca_task_executions", "cloaca_cron_executions")
    )


def remaining(db_query, url, ids):
    """The ids among `ids` still stored, with how many task rows each has."""
    listed = ", ".join(f"'{i}'" for i in ids)
    executions = {row[0] for row in db_query(url, f"SELECT id FROM cloaca_executions WHERE id IN ({listed})")}
    tasks = {
        row[0]
        for row in db_query(url, f"SELECT execution_id FROM cloaca_task_executions WHERE execution_id IN ({listed})")
    }
    return executions, tasks


def test_prunes_by_age_with_task_rows(fresh_database_url, workflow_name, db_query):
    define(workflow_name)
    with open_runner(fresh_database_url) as runner:
        old = run(runner, workflow_name, 3)
        time.sleep(0.05)
        cutoff = datetime.now(timezone.utc)
        time.sleep(0.05)
        new = run(runner, workflow_name, 2)
        assert runner.prune_executions(cutoff) == 3
        assert remaining(db_query, fresh_database_url, old) == (set(), set())
        assert remaining(db_query, fresh_database_url, new) == (set(new), set(new))
        for execution_id in old:
            with pytest.raises(cloaca.ExecutionNotFoundError):
                runner.get_execution(execution_id)
        assert runner.prune_executions(cutoff) == 0, "nothing older is left"
        assert runner.prune_executions(cutoff.isoformat()) == 0, "an RFC 3339 string works alike"
        assert runner.prune_executions(LATER) == 2
        assert counts(db_query, fresh_database_url) == (0, 0, 0)


def test_prunes_by_status_and_by_workflow(fresh_database_url, workflow_name, db_query):
    failing = workflow_name + "_failing"
    other = workflow_name + "_other"
    define(workflow_name)
    define(failing, fail=True)
    define(other)
    with open_runner(fresh_database_url) as runner:
        completed = run(runner, workflow_name, 2)
        failed = run(runner, failing, 2)
        kept = run(runner, other, 2)
        assert {runner.get_execution(i).status for i in failed} == {"Failed"}
        assert runner.prune_executions(LATER, status="Failed") == 2
        assert remaining(db_query, fresh_database_url, failed) == (set(), set())
        assert runner.prune_executions(LATER, status="Completed", workflow_name=workflow_name) == 2
        assert remaining(db_query, fresh_database_url, completed) == (set(), set())
        assert runner.prune_executions(LATER, workflow_name="no such workflow") == 0
        assert remaining(db_query, fresh_database_url, kept) == (set(kept), set(kept))


def test_prunes_in_batches_until_done(fresh_database_url, workflow_name, db_query):
    define(workflow_name)
    with open_runner(fresh_database_url) as runner:
        run(runner, workflow_name, 7)
        assert runner.prune_executions(LATER, batch_size=2) == 7
        assert runner.prune_executions(LATER, batch_size=1) == 0
    assert counts(db_query, fresh_database_url) == (0, 0, 0)


def test_never_prunes_an_unfinished_execution(fresh_database_url, workflow_name, db_query):
    gate = threading.Event()
    define(workflow_name, gate=gate)
    with open_runner(fresh_database_url) as runner:
        handle = runner.execute_async(workflow_name, {})
        deadline = time.monotonic() + WAIT
        while runner.get_execution(handle.execution_id).status != "Running":
            assert time.monotonic() < deadline, "the execution never started"
            time.sleep(0.02)
        try:
            assert runner.prune_executions(LATER) == 0
            assert runner.prune_executions(LATER, status="Completed", workflow_name=workflow_name) == 0
            assert remaining(db_query, fresh_database_url, [handle.execution_id])[0] == {handle.execution_id}
        finally:
            gate.set()
        assert handle.wait(WAIT).status == "Completed"
        assert runner.prune_executions(LATER) == 1


def test_removes_the_cron_history_rows_of_pruned_executions(fresh_database_url, workflow_name, db_query):
    define(workflow_name)
    config = cloaca.DefaultRunnerConfig(cron_poll_interval_seconds=0.2)
    with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
        schedule_id = runner.register_cron_workflow(workflow_name, "* * * * * *")
        deadline = time.monotonic() + WAIT
        while not any(r["status"] == "Completed" for r in runner.get_cron_execution_history(schedule_id)):
            assert time.monotonic() < deadline, "no tick's execution completed"
            time.sleep(0.05)
        runner.set_cron_schedule_enabled(schedule_id, False)
        # Ticks fired before the schedule was disabled may still be running.
        deadline = time.monotonic() + WAIT
        while any(r["status"] in ("Pending", "Running") for r in runner.get_cron_execution_history(schedule_id)):
            assert time.monotonic() < deadline, "a tick's execution never finished"
            time.sleep(0.05)
        runs = len(runner.get_cron_execution_history(schedule_id))
        assert runner.prune_executions(LATER) == runs
        assert runner.get_cron_execution_history(schedule_id) == []
        assert runner.get_cron_schedule(schedule_id)["id"] == schedule_id, "the schedule itself stays"
    assert counts(db_query, fresh_database_url) == (0, 0, 0)


REFUSED = {
    "status-running": ({"status": "Running"}, ValueError, "Running"),
    "status-pending": ({"status": "Pending"}, ValueError, "Pending"),
    "status-unknown": ({"status": "completed!"}, ValueError, "completed!"),
    "batch-zero": ({"batch_size": 0}, ValueError, "batch_size=0"),
    "batch-negative": ({"batch_size": -5}, ValueError, "batch_size=-5"),
    "naive-datetime": ({"older_than": datetime(2999, 1, 1)}, ValueError, "older_than"),
    "no-offset": ({"older_than": "2999-01-01T00:00:00"}, ValueError, "2999-01-01T00:00:00"),
    "not-a-time": ({"older_than": "yesterday"}, ValueError, "yesterday"),
    "int-time": ({"older_than": 12345}, TypeError, "older_than"),
    "none-time": ({"older_than": None}, TypeError, "older_than"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_name_the_value_and_delete_nothing(case, fresh_database_url, workflow_name, db_query):
    arguments, error_type, named = REFUSED[case]
    define(workflow_name)
    with open_runner(fresh_database_url) as runner:
        run(runner, workflow_name, 2)
        before = counts(db_query, fresh_database_url)
        with pytest.raises(error_type) as error:
            runner.prune_executions(**{"older_than": LATER, **arguments})
        assert named in str(error.value)
        assert counts(db_query, fresh_database_url) == before


def test_an_aware_datetime_in_another_zone_is_the_same_instant(fresh_database_url, workflow_name):
    define(workflow_name)
    with open_runner(fresh_database_url) as runner:
        run(runner, workflow_name, 1)
        an_hour_ago_elsewhere = datetime.now(timezone(timedelta(hours=-5))) - timedelta(hours=1)
        assert runner.prune_executions(an_hour_ago_elsewhere) == 0
        assert runner.prune_executions(datetime.now(timezone(timedelta(hours=9))) + timedelta(seconds=1)) == 1


def test_the_retention_setting_prunes_in_the_background(fresh_database_url, workflow_name, db_query):
    gate = threading.Event()
    define(workflow_name, gate=gate)
    # About 1.7 s; the background pruner looks every tenth of it.
    with open_runner(fresh_database_url, execution_retention_days=2 / 86400) as runner:
        assert runner is not None
        gate.set()
        finished = run(runner, workflow_name, 2)
        gate.clear()
        running = runner.execute_async(workflow_name, {})
        deadline = time.monotonic() + WAIT
        while remaining(db_query, fresh_database_url, finished)[0]:
            assert time.monotonic() < deadline, "the background pruner never deleted the finished executions"
            time.sleep(0.1)
        assert remaining(db_query, fresh_database_url, finished)[1] == set()
        assert runner.get_execution(running.execution_id).status in ("Pending", "Running")
        gate.set()
        assert running.wait(WAIT).status == "Completed"
