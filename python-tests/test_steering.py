"""Seeing inside runs and steering them: task records, events, cancel, pause,
resume, retry, idempotent starts, pictures of runs, logging.

Each test runs against a real database of the backend under test; the
cross-process ones start real processes (python-tests/scenarios/) that share it.
"""

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import pytest

import cloaca

WAIT = 60  # seconds: a bound for waits that should end almost at once


@pytest.fixture
def runner(fresh_database_url):
    with cloaca.DefaultRunner(fresh_database_url) as r:
        yield r


def declare_chain(name, gate=None, fail_flag=None, runs=None):
    """first -> middle -> last. `middle` waits for `gate` (a threading.Event)
    and fails while the file `fail_flag` exists; `runs` counts each task's runs."""
    runs = runs if runs is not None else {}
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="first")
        def first(ctx):
            runs["first"] = runs.get("first", 0) + 1
            ctx.set("first", runs["first"])
            return ctx

        @cloaca.task(id="middle", dependencies=["first"])
        def middle(ctx):
            runs["middle"] = runs.get("middle", 0) + 1
            if gate is not None:
                gate.wait(WAIT)
            if fail_flag is not None and Path(fail_flag).exists():
                raise RuntimeError("middle is not ready yet")
            ctx.set("middle", runs["middle"])
            return ctx

        @cloaca.task(id="last", dependencies=["middle"])
        def last(ctx):
            runs["last"] = runs.get("last", 0) + 1
            ctx.set("last", runs["last"])
            return ctx

    return runs


def wait_for_status(runner, execution_id, wanted, task_id=None, timeout=WAIT):
    """Polls the execution (or one task of it) until its status is `wanted`."""
    deadline = time.monotonic() + timeout
    while True:
        if task_id is None:
            status = runner.get_execution(execution_id).status
        else:
            status = {t.task_id: t.status for t in runner.get_execution_tasks(execution_id)}[task_id]
        if status == wanted:
            return
        assert time.monotonic() < deadline, f"{task_id or execution_id} stayed {status}, never {wanted}"
        time.sleep(0.02)


def start_gated(run_scenario, wait_until, url, workflow_name, tmp_path, *extra):
    """Start scenarios/gated_runner.py (first -> gated -> last) and wait until its gated task runs.

    Returns (process, execution id, side-effect file, gate file, the script's common arguments);
    creating the gate file lets the gated task finish.
    """
    side, gate, id_file = tmp_path / "side", tmp_path / "gate", tmp_path / "id"
    common = ["--url", url, "--workflow", workflow_name, "--side-file", side, "--gate", gate]
    worker = run_scenario.start("gated_runner.py", *common, "--start", id_file, *extra)
    # The task may start before the script has written the execution's id.
    wait_until(
        lambda: side.exists() and "gated" in side.read_text() and id_file.exists(),
        WAIT,
        "the gated task to start",
        proc=worker,
    )
    return worker, id_file.read_text(), side, gate, common


def kinds(events, task_id=None):
    return [e.kind for e in events if task_id is None or e.task_id == task_id]


# ---------------------------------------------------------------------------
# Task records and events
# ---------------------------------------------------------------------------


class TestRecords:
    def test_a_finished_run_has_a_record_per_task(self, runner, workflow_name):
        declare_chain(workflow_name)
        result = runner.execute(workflow_name, {})
        assert result.status == "Completed"
        tasks = runner.get_execution_tasks(result.execution_id)
        assert [t.task_id for t in tasks] == ["first", "middle", "last"]
        for t in tasks:
            assert isinstance(t, cloaca.TaskRecord)
            assert t.status == "Completed" and t.attempts == 1
            assert t.runner == runner.runner_id
            assert t.duration_ms is not None and t.duration_ms >= 0
            assert t.started_at <= t.finished_at
            assert t.error_type is None and t.next_retry_at is None
            assert t.to_dict()["task_id"] == t.task_id and set(t.to_dict()) >= {"status", "attempts", "runner"}
        assert [t.to_dict() for t in result.tasks] == [t.to_dict() for t in tasks]

    def test_a_retried_failure_shows_its_attempts_error_and_events(self, runner, workflow_name):
        calls = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="flaky", retry_attempts=2, retry_delay_ms=10)
            def flaky(ctx):
                calls.append(1)
                if len(calls) < 3:
                    raise ConnectionError(f"try {len(calls)}")
                return ctx

        result = runner.execute(workflow_name, {})
        assert result.status == "Completed"
        (task,) = result.tasks
        assert task.attempts == 3 and task.status == "Completed"
        events = runner.get_execution_events(result.execution_id)
        assert all(isinstance(e, cloaca.ExecutionEvent) for e in events)
        assert kinds(events, "flaky") == [
            "task_ready",
            "attempt_claimed",
            "attempt_failed",
            "retry_scheduled",
            "attempt_claimed",
            "attempt_failed",
            "retry_scheduled",
            "attempt_claimed",
            "attempt_succeeded",
        ]
        failed = [e for e in events if e.kind == "attempt_failed"]
        assert [e.attempt for e in failed] == [1, 2]
        assert failed[0].detail == "ConnectionError: try 1" and failed[0].runner == runner.runner_id
        assert kinds(events)[0] == "execution_created" and kinds(events)[-1] == "execution_finished"
        assert events[-1].detail == "Completed"
        times = [e.time for e in events]
        assert times == sorted(times)

    def test_a_failed_task_keeps_its_error_and_dependents_are_skipped(self, runner, workflow_name, tmp_path):
        flag = tmp_path / "fail"
        flag.touch()
        declare_chain(workflow_name, fail_flag=str(flag))
        result = runner.execute(workflow_name, {})
        assert result.status == "Failed"
        by_id = {t.task_id: t for t in result.tasks}
        assert by_id["middle"].status == "Failed"
        assert by_id["middle"].error_type == "RuntimeError"
        assert by_id["middle"].error_message == "middle is not ready yet"
        assert "Traceback" in by_id["middle"].error_traceback
        assert by_id["last"].status == "Skipped" and by_id["last"].attempts == 0
        assert by_id["last"].skip_reason == "upstream_failed" and by_id["middle"].skip_reason is None
        events = runner.get_execution_events(result.execution_id)
        assert [(e.task_id, e.detail) for e in events if e.kind == "task_skipped"] == [("last", "upstream_failed")]
        assert events[-1].kind == "execution_finished" and events[-1].detail.startswith("Failed: Task 'middle'")

    def test_a_running_task_is_visible_as_running(self, runner, workflow_name):
        gate = threading.Event()
        declare_chain(workflow_name, gate=gate)
        handle = runner.execute_async(workflow_name, {})
        try:
            wait_for_status(runner, handle.execution_id, "Running", task_id="middle")
            by_id = {t.task_id: t for t in runner.get_execution_tasks(handle.execution_id)}
            assert by_id["middle"].duration_ms is None and by_id["middle"].finished_at is None
            assert by_id["last"].status == "Pending"
            assert kinds(runner.get_execution_events(handle.execution_id), "middle")[-1] == "attempt_claimed"
        finally:
            gate.set()
        assert handle.wait(WAIT).status == "Completed"

    def test_unknown_ids_raise_the_not_found_error(self, runner):
        for method in (runner.get_execution_tasks, runner.get_execution_events, runner.cancel_execution):
            with pytest.raises(cloaca.ExecutionNotFoundError, match="no-such-id"):
                method("no-such-id")

    def test_database_info_counts_what_is_stored(self, runner, workflow_name, backend):
        declare_chain(workflow_name)
        runner.execute(workflow_name, {})
        info = runner.get_database_info()
        assert info["backend"] == backend and info["schema_version"] >= 5
        assert info["executions"]["Completed"] == 1 and info["executions"]["Cancelled"] == 0
        assert info["task_executions"] == 3 and info["cron_schedules"] == 0
        assert "password" not in info["database"]


# ---------------------------------------------------------------------------
# Cancel
# ---------------------------------------------------------------------------


class TestCancel:
    def test_cancel_a_running_execution(self, runner, workflow_name):
        gate = threading.Event()
        runs = declare_chain(workflow_name, gate=gate)
        handle = runner.execute_async(workflow_name, {})
        wait_for_status(runner, handle.execution_id, "Running", task_id="middle")
        runner.cancel_execution(handle.execution_id)
        result = handle.wait(WAIT)
        assert result.status == "Cancelled"
        gate.set()  # the running plain task runs to its end; its outcome is discarded
        time.sleep(0.3)
        by_id = {t.task_id: t.status for t in runner.get_execution_tasks(handle.execution_id)}
        assert by_id == {"first": "Completed", "middle": "Cancelled", "last": "Cancelled"}
        assert "last" not in runs, "no task starts after a cancel"
        assert runner.get_execution(handle.execution_id).final_context.to_dict() == {"first": 1}
        events = runner.get_execution_events(handle.execution_id)
        assert "execution_cancelled" in kinds(events) and kinds(events, "middle")[-1] == "attempt_cancelled"

    def test_cancelled_executions_are_pruned_with_their_events(
        self, runner, workflow_name, fresh_database_url, db_query
    ):
        gate = threading.Event()
        declare_chain(workflow_name, gate=gate)
        handle = runner.execute_async(workflow_name, {})
        runner.cancel_execution(handle.execution_id)
        gate.set()
        assert runner.prune_executions("2999-01-01T00:00:00Z", status="Completed") == 0
        assert runner.prune_executions("2999-01-01T00:00:00Z", status="Cancelled") == 1
        with pytest.raises(cloaca.ExecutionNotFoundError):
            runner.get_execution_events(handle.execution_id)
        rows = db_query(fresh_database_url, "SELECT COUNT(*) FROM cloaca_execution_events")
        assert int(rows[0][0]) == 0

    def test_cancel_stops_a_running_async_task(self, runner, workflow_name):
        started, finished = threading.Event(), []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="sleeper")
            async def sleeper(ctx):
                started.set()
                try:
                    await asyncio.sleep(WAIT)
                finally:
                    finished.append("ended")
                return ctx

        handle = runner.execute_async(workflow_name, {})
        assert started.wait(WAIT)
        t0 = time.monotonic()
        handle.cancel()
        assert handle.wait(WAIT).status == "Cancelled"
        deadline = time.monotonic() + WAIT
        while not finished and time.monotonic() < deadline:
            time.sleep(0.01)
        assert finished == ["ended"] and time.monotonic() - t0 < WAIT / 2, "the coroutine was cancelled"

    def test_cancelling_a_finished_execution_is_refused(self, runner, workflow_name):
        declare_chain(workflow_name)
        result = runner.execute(workflow_name, {})
        with pytest.raises(cloaca.ExecutionStateError) as raised:
            runner.cancel_execution(result.execution_id)
        assert isinstance(raised.value, ValueError)
        assert result.execution_id in str(raised.value) and "Completed" in str(raised.value)
        assert runner.get_execution(result.execution_id).status == "Completed"

    def test_cancel_from_another_process(self, fresh_database_url, workflow_name, run_scenario, wait_until, tmp_path):
        started = start_gated(run_scenario, wait_until, fresh_database_url, workflow_name, tmp_path)
        worker, execution_id, side, gate, common = started
        steered = run_scenario("steer.py", fresh_database_url, "cancel", execution_id)
        assert json.loads(steered.stdout) == {"ok": True}, steered.stderr
        gate.touch()
        with cloaca.DefaultRunner(fresh_database_url) as observer:
            assert observer.get_execution(execution_id).status == "Cancelled"
            time.sleep(0.5)
            statuses = {t.task_id: t.status for t in observer.get_execution_tasks(execution_id)}
        assert statuses == {"first": "Completed", "gated": "Cancelled", "last": "Cancelled"}
        assert "last" not in side.read_text().split()
        refused = run_scenario("steer.py", fresh_database_url, "cancel", execution_id)
        assert json.loads(refused.stdout)["error_type"] == "ExecutionStateError"
        (gate.parent / "gate.stop").touch()

    def test_cancel_from_another_process_stops_a_running_async_task(
        self, fresh_database_url, workflow_name, run_scenario, wait_until, tmp_path
    ):
        started = start_gated(run_scenario, wait_until, fresh_database_url, workflow_name, tmp_path, "--async-gate")
        worker, execution_id, side, gate, common = started
        assert json.loads(run_scenario("steer.py", fresh_database_url, "cancel", execution_id).stdout) == {"ok": True}
        # NOTIFY on postgres; the runner's poll of its running attempts on sqlite.
        wait_until(lambda: "gated-cancelled" in side.read_text(), WAIT, "the coroutine to be cancelled", proc=worker)
        assert "gated-done" not in side.read_text()
        (gate.parent / "gate.stop").touch()


# ---------------------------------------------------------------------------
# Pause and resume
# ---------------------------------------------------------------------------


class TestPause:
    def test_pause_holds_new_tasks_until_resume(self, runner, workflow_name):
        gate = threading.Event()
        runs = declare_chain(workflow_name, gate=gate)
        handle = runner.execute_async(workflow_name, {})
        wait_for_status(runner, handle.execution_id, "Running", task_id="middle")
        runner.pause_execution(handle.execution_id)
        runner.pause_execution(handle.execution_id)  # pausing a paused execution changes nothing
        assert runner.get_execution(handle.execution_id).status == "Paused"
        gate.set()  # the running task finishes and is recorded
        wait_for_status(runner, handle.execution_id, "Completed", task_id="middle")
        wait_for_status(runner, handle.execution_id, "Paused", task_id="last")
        time.sleep(0.5)
        assert "last" not in runs and runner.get_execution(handle.execution_id).status == "Paused"
        runner.resume_execution(handle.execution_id)
        result = handle.wait(WAIT)
        assert result.status == "Completed" and runs["last"] == 1
        assert {"execution_paused", "execution_resumed"} <= set(kinds(runner.get_execution_events(handle.execution_id)))

    def test_a_pause_survives_a_runner_restart(
        self, fresh_database_url, workflow_name, run_scenario, wait_until, tmp_path
    ):
        started = start_gated(run_scenario, wait_until, fresh_database_url, workflow_name, tmp_path)
        worker, execution_id, side, gate, common = started
        assert json.loads(run_scenario("steer.py", fresh_database_url, "pause", execution_id).stdout) == {"ok": True}
        gate.touch()
        wait_until(lambda: "gated-done" in side.read_text(), WAIT, "the running task to finish", proc=worker)
        (tmp_path / "gate.stop").touch()
        worker.wait(WAIT)
        (tmp_path / "gate.stop").unlink()
        restarted = run_scenario.start("gated_runner.py", *common)
        time.sleep(1.5)
        with cloaca.DefaultRunner(fresh_database_url) as observer:
            assert observer.get_execution(execution_id).status == "Paused"
            statuses = {t.task_id: t.status for t in observer.get_execution_tasks(execution_id)}
            assert statuses == {"first": "Completed", "gated": "Completed", "last": "Paused"}
            assert "last" not in side.read_text().split()
            observer.resume_execution(execution_id)
            wait_until(
                lambda: observer.get_execution(execution_id).status == "Completed", WAIT, "resume", proc=restarted
            )
        assert side.read_text().split().count("last") == 1
        (tmp_path / "gate.stop").touch()

    def test_steering_a_finished_execution_is_refused(self, runner, workflow_name):
        declare_chain(workflow_name)
        result = runner.execute(workflow_name, {})
        for method in (runner.pause_execution, runner.resume_execution):
            with pytest.raises(cloaca.ExecutionStateError, match=result.execution_id):
                method(result.execution_id)


# ---------------------------------------------------------------------------
# Retry from failure
# ---------------------------------------------------------------------------


class TestRetry:
    def test_retry_runs_only_what_did_not_complete(self, runner, workflow_name, tmp_path):
        flag = tmp_path / "fail"
        flag.touch()
        runs = declare_chain(workflow_name, fail_flag=str(flag))
        failed = runner.execute(workflow_name, {})
        assert failed.status == "Failed"
        flag.unlink()
        result = runner.retry_execution(failed.execution_id).wait(WAIT)
        assert result.status == "Completed" and result.execution_id == failed.execution_id
        assert runs == {"first": 1, "middle": 2, "last": 1}
        assert result.final_context.to_dict() == {"first": 1, "middle": 2, "last": 1}
        by_id = {t.task_id: t for t in result.tasks}
        assert by_id["middle"].attempts == 1 and by_id["middle"].error_type is None
        events = runner.get_execution_events(failed.execution_id)
        assert kinds(events, "middle").count("attempt_failed") == 1, "the earlier attempt stays in the history"
        assert kinds(events, "middle").count("task_ready") == 2, "and so does the earlier round's ready time"
        retried_at = kinds(events).index("execution_retried")
        assert kinds(events)[retried_at - 1] == "execution_finished" and "task_ready" in kinds(events)[retried_at:]
        assert kinds(events).count("execution_finished") == 2 and "execution_retried" in kinds(events)

    def test_only_failed_or_cancelled_executions_are_retried(self, runner, workflow_name):
        declare_chain(workflow_name)
        result = runner.execute(workflow_name, {})
        with pytest.raises(cloaca.ExecutionStateError, match="Completed"):
            runner.retry_execution(result.execution_id)

    def test_retry_after_a_sigkill_interrupted_run(
        self, fresh_database_url, workflow_name, run_scenario, wait_until, tmp_path
    ):
        started = start_gated(run_scenario, wait_until, fresh_database_url, workflow_name, tmp_path)
        worker, execution_id, side, gate, common = started
        worker.kill()
        worker.wait(WAIT)
        assert json.loads(run_scenario("steer.py", fresh_database_url, "cancel", execution_id).stdout) == {"ok": True}
        gate.touch()
        replacement = run_scenario.start("gated_runner.py", *common)
        assert json.loads(run_scenario("steer.py", fresh_database_url, "retry", execution_id).stdout) == {"ok": True}
        with cloaca.DefaultRunner(fresh_database_url) as observer:
            wait_until(
                lambda: observer.get_execution(execution_id).status == "Completed", WAIT, "the retry", proc=replacement
            )
            by_id = {t.task_id: t for t in observer.get_execution_tasks(execution_id)}
        lines = side.read_text().split("\n")
        assert sum(1 for line in lines if line.startswith("first ")) == 1, "the completed task did not run again"
        assert by_id["gated"].status == "Completed" and by_id["gated"].attempts == 1
        (tmp_path / "gate.stop").touch()


# ---------------------------------------------------------------------------
# Idempotent starts
# ---------------------------------------------------------------------------


class TestIdempotency:
    def test_a_key_starts_one_execution(self, runner, workflow_name):
        declare_chain(workflow_name)
        first = runner.execute(workflow_name, {"n": 1}, idempotency_key="order-17")
        again = runner.execute(workflow_name, {"n": 2}, idempotency_key="order-17")
        handle = runner.execute_async(workflow_name, {"n": 3}, idempotency_key="order-17")
        assert first.execution_id == again.execution_id == handle.execution_id
        assert len(runner.list_executions(workflow_name=workflow_name)) == 1
        other = runner.execute(workflow_name, {}, idempotency_key="order-18")
        assert other.execution_id != first.execution_id

    def test_a_key_reused_for_another_workflow_is_refused(self, runner, workflow_name):
        declare_chain(workflow_name)
        declare_chain(workflow_name + "_other")
        runner.execute(workflow_name, {}, idempotency_key="k")
        with pytest.raises(cloaca.IdempotencyKeyError) as raised:
            runner.execute_async(workflow_name + "_other", {}, idempotency_key="k")
        assert isinstance(raised.value, ValueError) and workflow_name in str(raised.value)
        assert runner.list_executions(workflow_name=workflow_name + "_other") == []
        with pytest.raises(ValueError, match="idempotency_key"):
            runner.execute(workflow_name, {}, idempotency_key="")

    def test_two_processes_racing_one_key_start_one_execution(
        self, fresh_database_url, workflow_name, run_scenario, tmp_path, db_query
    ):
        side, gate, barrier = tmp_path / "side", tmp_path / "gate", tmp_path / "barrier"
        gate.touch()
        common = ["--url", fresh_database_url, "--workflow", workflow_name, "--side-file", side, "--gate", gate]
        racers = [
            run_scenario.start(
                "gated_runner.py", *common, "--key", "race", "--barrier", barrier, "--id-file", tmp_path / f"id{i}"
            )
            for i in range(2)
        ]
        time.sleep(2)  # both have opened their runners and wait at the barrier
        barrier.touch()
        for proc in racers:
            assert proc.wait(WAIT) == 0, proc.output()
        ids = {(tmp_path / f"id{i}").read_text() for i in range(2)}
        assert len(ids) == 1
        rows = db_query(fresh_database_url, "SELECT id FROM cloaca_executions WHERE idempotency_key = 'race'")
        assert [r[0] for r in rows] == list(ids)


# ---------------------------------------------------------------------------
# Pictures of a run
# ---------------------------------------------------------------------------


class TestRenderExecution:
    def test_each_task_is_painted_with_its_state(self, runner, workflow_name, tmp_path):
        flag = tmp_path / "fail"
        flag.touch()
        declare_chain(workflow_name, fail_flag=str(flag))
        result = runner.execute(workflow_name, {})
        mermaid = runner.render_execution(result.execution_id)
        assert mermaid.startswith("---") or "flowchart" in mermaid
        assert "Completed" in mermaid and "Failed" in mermaid and "Skipped" in mermaid
        dot = runner.render_execution(result.execution_id, format="dot")
        assert dot.lstrip().startswith("digraph") and "1 attempt" in dot
        with pytest.raises(ValueError, match="svg"):
            runner.render_execution(result.execution_id, format="svg")


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------


def records_of(caplog, execution_id, until):
    """The captured records of one execution, once `until(records)` holds
    (the worker thread that finished the run may log a moment after execute()
    returned)."""
    deadline = time.monotonic() + WAIT
    while True:
        records = [r for r in caplog.records if getattr(r, "execution_id", None) == execution_id]
        if until(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.01)


class TestLogging:
    def test_records_at_their_levels_with_extra_fields(self, runner, workflow_name, caplog):
        calls = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="flaky", retry_attempts=1, retry_delay_ms=10)
            def flaky(ctx):
                calls.append(1)
                raise ValueError(f"bad {len(calls)}")

        with caplog.at_level(logging.DEBUG, logger="cloaca"):
            result = runner.execute(workflow_name, {})
            mine = records_of(caplog, result.execution_id, until=lambda rs: any(r.levelname == "ERROR" for r in rs))
        assert result.status == "Failed"
        by_level = {}
        for r in mine:
            by_level.setdefault(r.levelname, []).append(r)
            assert r.workflow == workflow_name
        assert any(r.name == "cloaca.execution" and "started" in r.getMessage() for r in by_level["INFO"])
        warnings = [r for r in by_level["WARNING"] if r.name == "cloaca.task"]
        assert len(warnings) == 2 and all(r.task == "flaky" for r in warnings)
        assert "retry scheduled" in warnings[0].getMessage() and "bad 1" in warnings[0].getMessage()
        assert any(r.name == "cloaca.execution" and "Failed" in r.getMessage() for r in by_level["ERROR"])
        assert any(r.name == "cloaca.task" and r.task == "flaky" for r in by_level["DEBUG"])

    def test_a_successful_run_logs_start_and_finish_at_info(self, runner, workflow_name, caplog):
        declare_chain(workflow_name)
        with caplog.at_level(logging.INFO, logger="cloaca"):
            result = runner.execute(workflow_name, {})
            mine = records_of(caplog, result.execution_id, until=lambda rs: len(rs) >= 2)
        assert [r.levelname for r in mine] == ["INFO", "INFO"]
        assert "Completed" in mine[-1].getMessage() and mine[-1].task is None

    def test_steering_is_logged_at_info(self, runner, workflow_name, caplog):
        gate = threading.Event()
        declare_chain(workflow_name, gate=gate)
        handle = runner.execute_async(workflow_name, {})
        wait_for_status(runner, handle.execution_id, "Running", task_id="middle")
        with caplog.at_level(logging.INFO, logger="cloaca.execution"):
            runner.pause_execution(handle.execution_id)
            runner.resume_execution(handle.execution_id)
            runner.cancel_execution(handle.execution_id)
        gate.set()
        messages = [r.getMessage() for r in caplog.records if getattr(r, "execution_id", None) == handle.execution_id]
        assert [m.split()[-1] for m in messages[:2]] == ["paused", "resumed"]
        assert "cancelled" in messages[2] and all(r.levelname == "INFO" for r in caplog.records)

    def test_nothing_is_printed_when_logging_is_not_configured(self, run_python, fresh_database_url):
        code = (
            "import cloaca\n"
            "with cloaca.WorkflowBuilder('quiet'):\n"
            "    @cloaca.task(id='boom')\n"
            "    def boom(ctx):\n"
            "        raise ValueError('boom')\n"
            f"with cloaca.DefaultRunner({fresh_database_url!r}) as r:\n"
            "    print(r.execute('quiet', {}).status)\n"
        )
        done = run_python(code)
        assert done.returncode == 0 and done.stdout.strip() == "Failed"
        assert done.stderr == ""

    def test_importing_cloaca_does_not_import_logging(self, run_python):
        # Importing logging took a seventh of a new process's time to its first result.
        done = run_python("import sys, cloaca\nprint('logging' in sys.modules)")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "False"

    def test_logging_configured_after_the_import_gets_the_records(self, run_python, fresh_database_url):
        code = (
            "import cloaca\n"
            "with cloaca.WorkflowBuilder('late'):\n"
            "    @cloaca.task(id='boom')\n"
            "    def boom(ctx):\n"
            "        raise ValueError('boom')\n"
            f"runner = cloaca.DefaultRunner({fresh_database_url!r})\n"
            "import logging\n"
            "logging.basicConfig(level=logging.INFO, format='%(name)s %(levelname)s %(message)s')\n"
            "print(runner.execute('late', {}).status)\n"
            "runner.shutdown()\n"
        )
        done = run_python(code)
        assert done.returncode == 0 and done.stdout.strip() == "Failed", done.stderr
        assert "cloaca.execution INFO execution" in done.stderr
        assert 'cloaca.task WARNING task "boom"' in done.stderr
        assert "cloaca.execution ERROR execution" in done.stderr

    def test_a_builder_warning_is_not_printed_when_logging_is_not_configured(self, run_python):
        code = (
            "import cloaca\n"
            "with cloaca.WorkflowBuilder('warned'):\n"
            "    @cloaca.task()\n"
            "    def side(ctx):\n"
            "        return ctx\n"
            "    @cloaca.task(trigger_rules=cloaca.task_success('side'))\n"
            "    def other(ctx):\n"
            "        return ctx\n"
            "import logging\n"
            "print(len(logging.getLogger('cloaca').handlers))\n"
        )
        done = run_python(code)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "1" and done.stderr == ""
