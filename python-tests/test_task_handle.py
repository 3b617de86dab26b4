"""TaskHandle and defer_until: a task that waits gives its concurrency slot back.

With max_concurrent_tasks=1, another task runs to completion while one is
deferred: the deferred task's condition waits on an event that only the other
task sets, so the run completes only if the slot was really given back. Also:
which functions get a handle, consumption, the condition's errors and truthiness,
bad arguments, a deferral past the task's time limit, a shutdown during a
deferral (the attempt runs again on the next runner), and async tasks.
"""

import asyncio
import functools
import logging
import threading
import time

import pytest

import cloaca

WAIT = 60  # seconds: only to keep a broken engine from hanging the suite


def one_slot(database_url, **settings):
    config = cloaca.DefaultRunnerConfig(max_concurrent_tasks=1, **settings)
    return cloaca.DefaultRunner.with_config(database_url, config)


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class TestSlotRelease:
    @pytest.mark.parametrize("kind", ["sync", "async"])
    def test_another_task_runs_on_the_slot_while_one_is_deferred(self, database_url, workflow_name, kind):
        events, other_done = [], threading.Event()

        def wait_for_the_other(handle):
            events.append(f"deferring, held={handle.is_slot_held()}")
            handle.defer_until(other_done.is_set, poll_interval_ms=10)
            events.append(f"resumed, held={handle.is_slot_held()}")

        # Rows are claimed in task-id order: the waiter takes the only slot
        # first, so the other task can only run on the slot it gives back.
        with cloaca.WorkflowBuilder(workflow_name):
            if kind == "sync":

                @cloaca.task(id="a_waiter")
                def a_waiter(ctx, handle):
                    wait_for_the_other(handle)
                    return ctx

            else:

                @cloaca.task(id="a_waiter")
                async def a_waiter(ctx, handle):
                    await asyncio.sleep(0)
                    wait_for_the_other(handle)
                    return ctx

            @cloaca.task(id="b_other")
            def b_other(ctx):
                events.append("other ran")
                other_done.set()
                return ctx

        with one_slot(database_url) as runner:
            result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert events == ["deferring, held=True", "other ran", "resumed, held=True"]


class TestDetection:
    @staticmethod
    def run_with(database_url, workflow_name, function):
        with cloaca.WorkflowBuilder(workflow_name):
            cloaca.task(id="probe")(function)
        with cloaca.DefaultRunner(database_url) as runner:
            result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message

    def test_a_second_parameter_named_handle_or_task_handle_gets_one(self, database_url, workflow_name):
        got = []

        def with_handle(ctx, handle):
            got.append(type(handle))

        def with_task_handle(ctx, task_handle):
            got.append(type(task_handle))

        self.run_with(database_url, workflow_name, with_handle)
        self.run_with(database_url, workflow_name + "_2", with_task_handle)
        assert got == [cloaca.TaskHandle, cloaca.TaskHandle]

    def test_other_signatures_are_called_with_the_context_only(self, database_url, workflow_name):
        got = []

        def keyword_only(ctx, *, handle="none"):
            got.append(("keyword-only", handle))

        def other_name(ctx, helper="none"):
            got.append(("other name", helper))

        def star_args(ctx, *handle):
            got.append(("*args", handle))

        def partial_target(label, ctx, handle="none"):
            got.append((label, handle))

        class Callable:
            def __call__(self, ctx, handle="none"):
                got.append(("__call__", handle))

        functions = [keyword_only, other_name, star_args, functools.partial(partial_target, "partial"), Callable()]
        for n, function in enumerate(functions):
            self.run_with(database_url, f"{workflow_name}_{n}", function)
        assert got == [
            ("keyword-only", "none"),
            ("other name", "none"),
            ("*args", ()),
            ("partial", "none"),
            ("__call__", "none"),
        ]

    def test_is_not_constructible(self):
        with pytest.raises(TypeError):
            cloaca.TaskHandle()


class TestHandleUse:
    def test_the_handle_is_consumed_when_the_task_returns(self, database_url, workflow_name):
        kept = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="keeper")
            def keeper(ctx, handle):
                kept.append(handle)
                return ctx

        with cloaca.DefaultRunner(database_url) as runner:
            assert runner.execute(workflow_name).status == "Completed"
        (handle,) = kept
        with pytest.raises(ValueError, match="TaskHandle has already been consumed"):
            handle.defer_until(lambda: True)
        with pytest.raises(ValueError, match="TaskHandle has already been consumed"):
            handle.is_slot_held()
        assert "consumed" in repr(handle)

    def test_a_raising_condition_is_printed_logged_and_counts_as_false(
        self, database_url, workflow_name, capfd, caplog
    ):
        calls = []

        def condition():
            calls.append(1)
            if len(calls) < 3:
                raise RuntimeError(f"not yet {len(calls)}")
            return "truthy, not True"

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="patient")
            def patient(ctx, handle):
                handle.defer_until(condition, poll_interval_ms=0)
                ctx.set("calls", len(calls))
                return ctx

        with caplog.at_level(logging.WARNING, logger="cloaca.task"), cloaca.DefaultRunner(database_url) as runner:
            result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert result.final_context.get("calls") == 3, "a truthy value resumes; errors count as false"
        err = capfd.readouterr().err
        assert "[cloaca] defer_until condition error: RuntimeError: not yet 1" in err
        assert "[cloaca] defer_until condition error: RuntimeError: not yet 2" in err
        records = [r for r in caplog.records if r.name == "cloaca.task" and "defer_until condition" in r.getMessage()]
        assert len(records) == 2
        assert records[0].task == "patient" and records[0].execution_id == result.execution_id

    def test_bad_arguments_and_nested_calls_raise(self, database_url, workflow_name):
        errors, held_while_deferred = {}, []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="careless")
            def careless(ctx, handle):
                def nested():
                    held_while_deferred.append(handle.is_slot_held())
                    with pytest.raises(ValueError) as raised:
                        handle.defer_until(lambda: True)
                    errors["nested"] = str(raised.value)
                    return True

                with pytest.raises(ValueError) as raised:
                    handle.defer_until(lambda: True, poll_interval_ms=-1)
                errors["negative"] = str(raised.value)
                with pytest.raises(TypeError) as raised:
                    handle.defer_until(True)
                errors["not callable"] = str(raised.value)
                handle.defer_until(nested, poll_interval_ms=0)
                errors["held after"] = handle.is_slot_held()
                return ctx

        with cloaca.DefaultRunner(database_url) as runner:
            result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert "poll_interval_ms=-1 is not accepted" in errors["negative"]
        assert "callable" in errors["not callable"] and "bool" in errors["not callable"]
        assert "already waiting" in errors["nested"]
        assert held_while_deferred == [False]
        assert errors["held after"] is True


class TestLimits:
    @pytest.mark.parametrize("kind", ["sync", "async"])
    def test_a_deferral_past_the_time_limit_fails_the_attempt_as_timed_out(
        self, database_url, workflow_name, db_query, kind
    ):
        with cloaca.WorkflowBuilder(workflow_name):
            if kind == "sync":

                @cloaca.task(id="forever", timeout_seconds=0.5)
                def forever(ctx, handle):
                    handle.defer_until(lambda: False, poll_interval_ms=20)
                    return ctx

            else:

                @cloaca.task(id="forever", timeout_seconds=0.5)
                async def forever(ctx, handle):
                    handle.defer_until(lambda: False, poll_interval_ms=20)
                    return ctx

        with one_slot(database_url) as runner:
            result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert "task 'forever' timed out after 0.5 s" in result.error_message
        rows = db_query(
            database_url,
            f"SELECT error_type FROM cloaca_task_executions WHERE execution_id = {sql_str(result.execution_id)}",
        )
        assert rows == [("TimeoutError",)]

    def test_a_shutdown_during_a_deferral_fails_the_wait_and_the_attempt_runs_again(
        self, fresh_database_url, workflow_name, db_query, wait_until
    ):
        seen, go = [], threading.Event()

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="waiter", on_failure=lambda *args: seen.append("on_failure"))
            def waiter(ctx, handle):
                seen.append("deferring")
                try:
                    handle.defer_until(go.is_set, poll_interval_ms=20)
                except ValueError as e:
                    seen.append(str(e))
                    raise
                seen.append("resumed")
                return ctx

        runner = one_slot(fresh_database_url, task_lease_seconds=1)
        execution_id = runner.execute_async(workflow_name).execution_id
        wait_until(lambda: seen, WAIT, "the task to defer")
        runner.shutdown()
        assert seen[0] == "deferring"
        assert seen[1].startswith("defer_until failed: "), seen
        assert "shutting down" in seen[1]
        where = f"execution_id = {sql_str(execution_id)}"
        rows = db_query(fresh_database_url, f"SELECT status FROM cloaca_task_executions WHERE {where}")
        assert rows == [("running",)], "the interrupted attempt's failure was recorded"

        go.set()
        with one_slot(fresh_database_url, task_lease_seconds=1) as again:
            wait_until(lambda: again.get_execution(execution_id).status == "Completed", WAIT, "the rerun")
        rows = db_query(fresh_database_url, f"SELECT status, attempt FROM cloaca_task_executions WHERE {where}")
        assert rows == [("completed", "2")]
        assert seen[2:] == ["deferring", "resumed"], "on_failure ran for an attempt that was not recorded"

    def test_the_lease_is_renewed_while_deferred(self, fresh_database_url, workflow_name, db_query):
        runs = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="long_wait")
            def long_wait(ctx, handle):
                runs.append(1)
                until = time.monotonic() + 2.5
                handle.defer_until(lambda: time.monotonic() >= until, poll_interval_ms=50)
                return ctx

        # The idle second runner would take the attempt over if its lease lapsed.
        with (
            one_slot(fresh_database_url, task_lease_seconds=1) as first,
            one_slot(fresh_database_url, task_lease_seconds=1),
        ):
            result = first.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert runs == [1]
        where = f"execution_id = {sql_str(result.execution_id)}"
        assert db_query(fresh_database_url, f"SELECT attempt FROM cloaca_task_executions WHERE {where}") == [("1",)]

    def test_cancelling_the_execution_ends_the_deferral(self, database_url, workflow_name, wait_until):
        seen = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="cancelled", on_failure=lambda *args: seen.append("on_failure"))
            def cancelled(ctx, handle):
                seen.append("deferring")
                try:
                    handle.defer_until(lambda: False, poll_interval_ms=20)
                except ValueError as e:
                    seen.append(str(e))
                    raise
                return ctx

            @cloaca.task(id="after", dependencies=["cancelled"])
            def after(ctx):
                return ctx

        with one_slot(database_url) as runner:
            handle = runner.execute_async(workflow_name)
            wait_until(lambda: seen, WAIT, "the task to defer")
            runner.cancel_execution(handle.execution_id)
            wait_until(lambda: len(seen) > 1, WAIT, "the deferral to end")
            assert runner.get_execution(handle.execution_id).status == "Cancelled"
            # The runner is back to its one slot and runs the next execution.
            with cloaca.WorkflowBuilder(workflow_name + "_next"):

                @cloaca.task(id="next")
                def next_task(ctx):
                    return ctx

            assert runner.execute(workflow_name + "_next").status == "Completed"
        assert seen == ["deferring", "defer_until failed: the execution was cancelled"]
