"""Task callbacks: @task(on_success=..., on_failure=...).

What each callback receives, when it runs relative to the stored outcome and to
dependents, how often it runs with retries, when it does not run (timeouts,
bad return values), what a raising callback does (printed, logged, swallowed),
async callbacks, bad keyword values, the workflow version, and at-least-once
delivery across a SIGKILL (a real runner process).
"""

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

import pytest

import cloaca

WAIT = 60  # seconds: only to keep a broken engine from hanging the suite


class Errors:
    """Holds an exception class whose qualified name differs from its name."""

    class Custom(Exception):
        pass


@pytest.fixture
def runner(database_url):
    with cloaca.DefaultRunner(database_url) as r:
        yield r


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class TestOnSuccess:
    def test_gets_the_task_id_and_a_copy_of_the_output_before_dependents_start(self, runner, workflow_name):
        events, seen = [], []

        def on_success(task_id, ctx):
            assert isinstance(ctx, cloaca.Context)
            seen.append((task_id, ctx.to_dict()))
            events.append(f"on_success {task_id}")
            ctx.set("from_callback", True)  # a copy: changes nothing

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="first", on_success=on_success)
            def first_function(ctx):
                events.append("body first")
                ctx.set("a", 1)
                return ctx

            @cloaca.task(id="second", dependencies=["first"], on_success=on_success)
            def second_function(ctx):
                events.append("body second")
                ctx.set("b", 2)
                return None

        result = runner.execute(workflow_name, {"in": 0})
        assert result.status == "Completed", result.error_message
        assert events == ["body first", "on_success first", "body second", "on_success second"]
        assert seen == [("first", {"in": 0, "a": 1}), ("second", {"in": 0, "a": 1, "b": 2})]
        assert result.final_context.to_dict() == {"in": 0, "a": 1, "b": 2}

    def test_runs_before_the_completion_is_stored(self, database_url, runner, workflow_name, db_query):
        statuses, known = [], threading.Event()
        ids = {}

        def on_success(task_id, ctx):
            assert known.wait(WAIT)
            where = f"execution_id = {sql_str(ids['execution'])}"
            statuses.append(db_query(database_url, f"SELECT status FROM cloaca_task_executions WHERE {where}"))

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="only", on_success=on_success)
            def only(ctx):
                return ctx

        handle = runner.execute_async(workflow_name)
        ids["execution"] = handle.execution_id
        known.set()
        assert handle.wait(WAIT).status == "Completed"
        assert statuses == [[("running",)]]


class TestOnFailure:
    def test_gets_the_error_text_and_a_copy_of_the_input(self, runner, workflow_name):
        calls = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="boom", on_failure=lambda *args: calls.append((args[0], args[1], args[2].to_dict())))
            def boom(ctx):
                ctx.set("mutated", True)
                raise Errors.Custom("card declined")

        result = runner.execute(workflow_name, {"amount": 5})
        assert result.status == "Failed"
        assert calls == [("boom", "Python task execution failed: Errors.Custom: card declined", {"amount": 5})]

    def test_an_empty_message_leaves_the_type_and_colon(self, runner, workflow_name):
        errors = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="empty", on_failure=lambda task_id, error, ctx: errors.append(error))
            def empty(ctx):
                raise ValueError()

        runner.execute(workflow_name)
        assert errors == ["Python task execution failed: ValueError: "]

    def test_runs_once_per_failed_attempt_including_retried_ones(self, runner, workflow_name):
        calls, successes, runs = [], [], []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(
                id="flaky",
                retry_attempts=3,
                retry_delay_ms=1,
                retry_jitter=False,
                on_failure=lambda task_id, error, ctx: calls.append(error),
                on_success=lambda task_id, ctx: successes.append(task_id),
            )
            def flaky(ctx):
                runs.append(1)
                if len(runs) <= 2:
                    raise RuntimeError(f"attempt {len(runs)}")
                return ctx

        result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert calls == [
            "Python task execution failed: RuntimeError: attempt 1",
            "Python task execution failed: RuntimeError: attempt 2",
        ]
        assert successes == ["flaky"]

    def test_every_attempt_of_an_exhausted_task(self, runner, workflow_name):
        calls = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="never", retry_attempts=2, retry_delay_ms=1, on_failure=lambda *a: calls.append(a[0]))
            def never(ctx):
                raise KeyError("x")

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert calls == ["never", "never", "never"]

    def test_not_called_for_a_bad_return_value(self, runner, workflow_name):
        calls = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="bad", on_failure=lambda *a: calls.append(a), on_success=lambda *a: calls.append(a))
            def bad(ctx):
                return 42

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert "returned int" in result.error_message
        assert calls == []

    def test_not_called_when_a_plain_task_times_out_even_if_it_raises_later(self, runner, workflow_name):
        calls, ended = [], threading.Event()

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="slow", timeout_seconds=0.3, on_failure=lambda *a: calls.append(a))
            def slow(ctx):
                try:
                    time.sleep(1.0)
                    raise RuntimeError("raised after the timeout")
                finally:
                    ended.set()

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert "timed out" in result.error_message
        assert ended.wait(WAIT), "the abandoned body never ended"
        time.sleep(0.2)  # the abandoned body's exception has reached the engine by now
        assert calls == []

    def test_not_called_when_an_async_task_times_out(self, runner, workflow_name):
        calls = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="slow_async", timeout_seconds=0.2, on_failure=lambda *a: calls.append(a))
            async def slow_async(ctx):
                await asyncio.sleep(5)
                return ctx

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert "timed out" in result.error_message
        assert calls == []


class TestRaisingCallbacks:
    @pytest.mark.parametrize("which", ["on_success", "on_failure"])
    def test_are_printed_logged_and_swallowed(self, runner, workflow_name, which, capfd, caplog):
        def raising(*args):
            raise RuntimeError(f"{which} broke")

        body_fails = which == "on_failure"
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="charged", **{which: raising})
            def charged(ctx):
                if body_fails:
                    raise ValueError("the body's own error")
                ctx.set("done", True)
                return ctx

        with caplog.at_level(logging.ERROR, logger="cloaca.task"):
            result = runner.execute(workflow_name)
        if body_fails:
            assert result.status == "Failed"
            assert "ValueError: the body's own error" in result.error_message
        else:
            assert result.status == "Completed", result.error_message
            assert result.final_context.to_dict() == {"done": True}
        err = capfd.readouterr().err
        assert f"[cloaca] {which} callback failed for task 'charged': RuntimeError: {which} broke" in err
        records = [r for r in caplog.records if r.name == "cloaca.task" and which in r.getMessage()]
        assert len(records) == 1, [r.getMessage() for r in caplog.records]
        assert records[0].levelname == "ERROR"
        assert records[0].task == "charged"
        assert records[0].execution_id == result.execution_id
        assert f"RuntimeError: {which} broke" in records[0].getMessage()


class TestAsyncCallbacks:
    @pytest.mark.parametrize("async_task", [False, True], ids=["sync-task", "async-task"])
    def test_are_awaited_before_dependents_start(self, runner, workflow_name, async_task):
        events = []

        async def on_success(task_id, ctx):
            await asyncio.sleep(0.01)
            events.append(f"on_success {task_id} {ctx.get('n')}")

        async def on_failure(task_id, error, ctx):
            await asyncio.sleep(0.01)
            events.append(f"on_failure {task_id} {error}")

        with cloaca.WorkflowBuilder(workflow_name):
            if async_task:

                @cloaca.task(id="first", on_success=on_success)
                async def first(ctx):
                    await asyncio.sleep(0)
                    ctx.set("n", 1)
                    return ctx

            else:

                @cloaca.task(id="first", on_success=on_success)
                def first(ctx):
                    ctx.set("n", 1)
                    return ctx

            @cloaca.task(id="second", dependencies=["first"], on_failure=on_failure)
            def second(ctx):
                events.append("body second")
                raise ValueError("no")

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert events == [
            "on_success first 1",
            "body second",
            "on_failure second Python task execution failed: ValueError: no",
        ]

    def test_an_async_callback_past_the_deadline_times_the_attempt_out(self, runner, workflow_name):
        async def on_success(task_id, ctx):
            await asyncio.sleep(10)

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="slow_callback", timeout_seconds=0.3, on_success=on_success)
            async def slow_callback(ctx):
                return ctx

        result = runner.execute(workflow_name)
        assert result.status == "Failed"
        assert "task 'slow_callback' timed out" in result.error_message


class TestDeclaring:
    @pytest.mark.parametrize("keyword", ["on_success", "on_failure"])
    @pytest.mark.parametrize("value", [42, "print", [print]], ids=["int", "str", "list"])
    def test_a_non_callable_is_a_type_error_naming_the_keyword(self, workflow_name, keyword, value):
        with pytest.raises(TypeError, match=f"{keyword}= must be a callable"):
            cloaca.task(id="t", **{keyword: value})

    def test_none_means_no_callback(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="plain", on_success=None, on_failure=None)
            def plain(ctx):
                return ctx

        assert runner.execute(workflow_name).status == "Completed"

    def test_callbacks_are_not_part_of_the_version(self, workflow_name):
        def declare(**callbacks):
            with cloaca.WorkflowBuilder(workflow_name) as builder:

                @cloaca.task(id="only", **callbacks)
                def only(ctx):
                    return ctx

                return builder.build().version

        plain = declare()
        with_callbacks = declare(on_success=lambda *a: None, on_failure=lambda *a: None)
        assert plain == with_callbacks

    def test_the_decorator_class_is_exported(self):
        decorator = cloaca.task(id="x", on_success=print)
        assert isinstance(decorator, cloaca.TaskDecorator)
        with pytest.raises(TypeError):
            cloaca.TaskDecorator()


class TestAtLeastOnce:
    def test_the_lease_is_renewed_while_a_callback_runs(self, fresh_database_url, workflow_name, db_query):
        runs = []

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="slow_callback", on_success=lambda task_id, ctx: time.sleep(2.5))
            def slow_callback(ctx):
                runs.append(1)
                return ctx

        # Two runners on one database: the idle one would take the attempt
        # over if the lease lapsed during the callback.
        config = cloaca.DefaultRunnerConfig(task_lease_seconds=1)
        with (
            cloaca.DefaultRunner.with_config(fresh_database_url, config) as first,
            cloaca.DefaultRunner.with_config(fresh_database_url, config),
        ):
            result = first.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert runs == [1]
        where = f"execution_id = {sql_str(result.execution_id)}"
        rows = db_query(fresh_database_url, f"SELECT attempt FROM cloaca_task_executions WHERE {where}")
        assert rows == [("1",)]

    def test_a_runner_killed_after_on_success_ran_runs_the_attempt_and_callback_again(
        self, fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until, db_query
    ):
        side_file, id_file, result_file = tmp_path / "side.txt", tmp_path / "id", tmp_path / "result.json"
        side_file.touch()
        common = ["--url", fresh_database_url, "--workflow", workflow_name, "--side-file", side_file]
        first = run_scenario.start(
            "callback_runner.py", *common, "--mode", "start", "--hang-in-callback", "--result-file", id_file
        )
        wait_until(
            lambda: id_file.exists() and f"on_success {first.pid}" in side_file.read_text(),
            120,
            "on_success to run",
            proc=first,
        )
        execution_id = id_file.read_text()
        first.kill()
        first.wait(30)
        rows = db_query(
            fresh_database_url,
            f"SELECT status FROM cloaca_task_executions WHERE execution_id = {sql_str(execution_id)}",
        )
        assert rows == [("running",)], "the completion was committed before on_success returned"

        second = run_scenario.run(
            "callback_runner.py",
            *common,
            "--mode",
            "resume",
            "--execution-id",
            execution_id,
            "--result-file",
            result_file,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        assert json.loads(Path(result_file).read_text())["status"] == "Completed"
        lines = side_file.read_text().split()
        pids = lines[1::2]
        assert lines[0::2] == ["body", "on_success", "body", "on_success"], lines
        assert pids[0] == pids[1] == str(first.pid) and pids[2] == pids[3] != pids[0], lines
        rows = db_query(
            fresh_database_url,
            f"SELECT status, attempt FROM cloaca_task_executions WHERE execution_id = {sql_str(execution_id)}",
        )
        assert rows == [("completed", "2")]
