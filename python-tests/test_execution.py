"""Running workflows: what a task gets and gives, failures, handles, queries, durability.

Every test registers its own workflow under a name unique to the test (the
registry is process-global) and shuts its runners down (`with DefaultRunner`).
Nothing here asserts how fast anything is; timeouts only keep a broken engine
from hanging the suite.
"""

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timedelta

import pytest

import cloaca

WAIT = 60  # seconds: generous bound for waits that should end almost at once


def parse_time(text):
    """An RFC 3339 UTC timestamp as an aware datetime (fails the test otherwise)."""
    assert isinstance(text, str), f"expected an RFC 3339 string, got {text!r}"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0), f"{text!r} is not UTC"
    return parsed


def as_json(value) -> str:
    """JSON text with sorted keys: tells 1, 1.0 and True apart, which == does not."""
    return json.dumps(value, sort_keys=True)


def sql_str(value: str) -> str:
    """A SQL string literal (the values here are uuids and generated names)."""
    return "'" + value.replace("'", "''") + "'"


def task_rows(db_query, url, execution_id):
    """{task_id: {column: value}} of one execution, read straight from the table."""
    columns = (
        "task_id",
        "status",
        "attempt",
        "failures",
        "max_attempts",
        "workflow_name",
        "workflow_version",
        "output_context",
        "error_type",
        "error_message",
        "error_traceback",
        "started_at",
        "finished_at",
    )
    rows = db_query(
        url,
        f"SELECT {', '.join(columns)} FROM cloaca_task_executions "
        f"WHERE execution_id = {sql_str(execution_id)} ORDER BY task_id",
    )
    return {row[0]: dict(zip(columns, row)) for row in rows}


def execution_row(db_query, url, execution_id):
    columns = (
        "id",
        "workflow_name",
        "workflow_version",
        "status",
        "input_context",
        "final_context",
        "error_message",
        "tasks_remaining",
        "created_at",
        "started_at",
        "finished_at",
    )
    rows = db_query(url, f"SELECT {', '.join(columns)} FROM cloaca_executions WHERE id = {sql_str(execution_id)}")
    assert len(rows) == 1, f"expected one row for execution {execution_id}, got {rows}"
    return dict(zip(columns, rows[0]))


def define_raising(name, task_id, error):
    """A workflow of one task, `task_id`, that raises `error` at every attempt."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id=task_id)
        def raises(ctx):
            raise error


@pytest.fixture
def runner(database_url):
    with cloaca.DefaultRunner(database_url) as r:
        yield r


# ---------------------------------------------------------------------------
# What tasks receive and return
# ---------------------------------------------------------------------------


class TestTasks:
    def test_single_task(self, runner, workflow_name):
        seen = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="double")
            def double(ctx):
                seen.append(type(ctx))
                ctx.set("out", ctx.get("x") * 2)
                return ctx

        result = runner.execute(workflow_name, {"x": 21})

        assert isinstance(result, cloaca.PipelineResult)
        assert result.status == "Completed", result.error_message
        assert result.error_message is None
        assert isinstance(result.final_context, cloaca.Context)
        assert result.final_context.to_dict() == {"x": 21, "out": 42}
        assert seen == [cloaca.Context]
        assert str(uuid.UUID(result.execution_id)) == result.execution_id.lower()
        assert result.workflow_name == workflow_name
        assert parse_time(result.start_time) <= parse_time(result.end_time)

    def test_chain_passes_context_along(self, runner, workflow_name):
        ran = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="a")
            def a(ctx):
                ran.append(("a", ctx.to_dict()))
                ctx.set("trail", ["a"])
                ctx.set("a_value", ctx.get("seed") + 1)
                return ctx

            @cloaca.task(id="b", dependencies=["a"])
            def b(ctx):
                ran.append(("b", ctx.to_dict()))
                ctx.set("trail", [*ctx.get("trail"), "b"])
                ctx.set("b_value", ctx.get("a_value") * 10)
                return ctx

            @cloaca.task(id="c", dependencies=[b])  # a function object works as a dependency
            def c(ctx):
                ran.append(("c", ctx.to_dict()))
                ctx.set("trail", [*ctx.get("trail"), "c"])
                ctx.set("c_value", ctx.get("b_value") + ctx.get("a_value"))
                return ctx

        result = runner.execute(workflow_name, {"seed": 1})

        assert result.status == "Completed", result.error_message
        assert [name for name, _ in ran] == ["a", "b", "c"]
        assert ran[0][1] == {"seed": 1}
        assert ran[1][1] == {"seed": 1, "trail": ["a"], "a_value": 2}
        assert ran[2][1] == {"seed": 1, "trail": ["a", "b"], "a_value": 2, "b_value": 20}
        assert result.final_context.to_dict() == {
            "seed": 1,
            "trail": ["a", "b", "c"],
            "a_value": 2,
            "b_value": 20,
            "c_value": 22,
        }

    def test_diamond_merges_sibling_outputs_a_later_scalar_wins(self, runner, workflow_name):
        """root -> zeta, alpha -> join: the topological order is root, alpha, zeta, join
        (ties by id), so zeta's value of a shared key wins in join's input, whatever the
        order the siblings were declared or listed in."""
        join_inputs = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="root")
            def root(ctx):
                ctx.set("shared", "root")
                ctx.set("root_only", True)
                return ctx

            @cloaca.task(id="zeta", dependencies=["root"])  # declared first on purpose
            def zeta(ctx):
                ctx.set("shared", "zeta")
                ctx.set("zeta_only", 26)
                return ctx

            @cloaca.task(id="alpha", dependencies=["root"])
            def alpha(ctx):
                ctx.set("shared", "alpha")
                ctx.set("alpha_only", 1)
                return ctx

            @cloaca.task(id="join", dependencies=["zeta", "alpha"])
            def join(ctx):
                join_inputs.append(ctx.to_dict())
                ctx.set("joined", ctx.get("shared"))
                return ctx

        expected_join_input = {"start": 0, "shared": "zeta", "root_only": True, "zeta_only": 26, "alpha_only": 1}
        for _ in range(3):  # deterministic: the same every time
            result = runner.execute(workflow_name, {"start": 0})
            assert result.status == "Completed", result.error_message
            assert join_inputs[-1] == expected_join_input
            assert result.final_context.to_dict() == {**expected_join_input, "joined": "zeta"}
        assert len(join_inputs) == 3

    def test_branches_appending_to_one_list_and_dict_both_keep_their_entries(self, runner, workflow_name):
        """Dependency outputs merge deeply: lists are joined (without adding an element
        already there), objects key by key; the final context merges the same way."""
        join_inputs = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="root")
            def root(ctx):
                ctx.set("log", ["root"])
                ctx.set("meta", {"by": {"root": 1}, "n": 1})
                return ctx

            @cloaca.task(id="left", dependencies=["root"])
            def left(ctx):
                ctx.set("log", [*ctx.get("log"), "left"])
                ctx.set("meta", {**ctx.get("meta"), "by": {**ctx.get("meta")["by"], "left": 1}, "n": 2})
                ctx.set("kind", [1])
                return ctx

            @cloaca.task(id="right", dependencies=["root"])
            def right(ctx):
                ctx.set("log", [*ctx.get("log"), "right", "right"])
                ctx.set("meta", {**ctx.get("meta"), "by": {**ctx.get("meta")["by"], "right": 1}, "n": 3})
                ctx.set("kind", {"now": "an object"})
                ctx.set("num", [1.0, True])
                return ctx

            @cloaca.task(id="join", dependencies=["right", "left"])
            def join(ctx):
                join_inputs.append(ctx.to_dict())
                return ctx

        result = runner.execute(workflow_name, {"input_only": True})
        assert result.status == "Completed", result.error_message
        expected = {
            "input_only": True,
            # right's own duplicate collapses: each element is checked against the growing result
            "log": ["root", "left", "right"],
            "meta": {"by": {"root": 1, "left": 1, "right": 1}, "n": 3},
            "kind": {"now": "an object"},
            "num": [1.0, True],
        }
        assert as_json(join_inputs[0]) == as_json(expected)
        assert as_json(result.final_context.to_dict()) == as_json(expected)

    def test_deep_merge_keeps_equal_looking_values_of_other_json_types(self, runner, workflow_name):
        join_inputs = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="a")
            def a(ctx):
                ctx.set("values", [1, 1])
                return ctx

            @cloaca.task(id="b")
            def b(ctx):
                ctx.set("values", [1, 1.0, True, 1])
                return ctx

            @cloaca.task(id="join", dependencies=["a", "b"])
            def join(ctx):
                join_inputs.append(ctx.to_dict())
                return ctx

        assert runner.execute(workflow_name, {}).status == "Completed"
        assert as_json(join_inputs[0]) == as_json({"values": [1, 1, 1.0, True]})

    def test_merge_order_is_topological_not_alphabetical(self, runner, workflow_name):
        """root -> y; root -> z -> x; join <- x, y. Kahn's order with ties by id is
        root, y, z, x, join: x comes after y although it sorts before it, so x wins."""
        join_inputs = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="root")
            def root(ctx):
                return ctx

            @cloaca.task(id="y", dependencies=["root"])
            def y(ctx):
                ctx.set("shared", "y")
                return ctx

            @cloaca.task(id="z", dependencies=["root"])
            def z(ctx):
                ctx.set("via_z", True)
                return ctx

            @cloaca.task(id="x", dependencies=["z"])
            def x(ctx):
                ctx.set("shared", "x")
                return ctx

            @cloaca.task(id="join", dependencies=["y", "x"])
            def join(ctx):
                join_inputs.append(ctx.to_dict())
                return ctx

        result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert join_inputs == [{"shared": "x", "via_z": True}]
        assert result.final_context.to_dict() == {"shared": "x", "via_z": True}

    def test_task_returning_none_keeps_its_mutations(self, runner, workflow_name):
        seen_by_b = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="a")
            def a(ctx):
                ctx.set("added", [1, 2])
                ctx["keep"] = "changed"
                del ctx["drop_me"]
                # no return: the mutated context is the output

            @cloaca.task(id="b", dependencies=["a"])
            def b(ctx):
                seen_by_b.append(ctx.to_dict())
                ctx.set("b_saw_added", "added" in ctx)
                return None

        result = runner.execute(workflow_name, {"keep": "original", "drop_me": True})

        assert result.status == "Completed", result.error_message
        assert seen_by_b == [{"keep": "changed", "added": [1, 2]}]
        assert result.final_context.to_dict() == {"keep": "changed", "added": [1, 2], "b_saw_added": True}

    @pytest.mark.parametrize("returned", [{"a": 1}, "a string", 42, ["list"]], ids=["dict", "str", "int", "list"])
    def test_task_returning_a_non_context_fails_with_type_error(self, runner, workflow_name, returned):
        ran = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="bad_return")
            def bad_return(ctx):
                ran.append("bad_return")
                return returned

            @cloaca.task(id="after", dependencies=["bad_return"])
            def after(ctx):
                ran.append("after")
                return ctx

        result = runner.execute(workflow_name, {})

        assert result.status == "Failed"
        assert ran == ["bad_return"]
        assert "bad_return" in result.error_message
        assert "TypeError" in result.error_message

    def test_async_tasks_are_awaited(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="first")
            async def first(ctx):
                await asyncio.sleep(0.01)
                ctx.set("first", "async")
                return ctx

            @cloaca.task(id="second", dependencies=["first"])
            def second(ctx):
                ctx.set("second", ctx.get("first") + "+sync")
                return ctx

            @cloaca.task(id="third", dependencies=["second"])
            async def third(ctx):
                values = await asyncio.gather(asyncio.sleep(0.01, result=1), asyncio.sleep(0.02, result=2))
                ctx.set("third", values)
                # returns None: the mutation is kept, as for a sync task

        result = runner.execute(workflow_name, {"in": 0})

        assert result.status == "Completed", result.error_message
        assert result.final_context.to_dict() == {"in": 0, "first": "async", "second": "async+sync", "third": [1, 2]}

    def test_async_task_that_raises_fails_the_run(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="async_boom")
            async def async_boom(ctx):
                await asyncio.sleep(0)
                raise LookupError("async failure text")

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert "async_boom" in result.error_message
        assert "LookupError: async failure text" in result.error_message


# ---------------------------------------------------------------------------
# Inputs to execute()
# ---------------------------------------------------------------------------


class TestExecuteInput:
    @pytest.mark.parametrize(
        "make_input",
        [
            lambda: {"n": 5, "nested": {"list": [1, "two", None]}},
            lambda: cloaca.Context({"n": 5, "nested": {"list": [1, "two", None]}}),
        ],
        ids=["dict", "Context"],
    )
    def test_execute_with_a_dict_or_a_context(self, runner, workflow_name, make_input):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="inc")
            def inc(ctx):
                ctx.set("n", ctx.get("n") + 1)
                return ctx

        result = runner.execute(workflow_name, context=make_input())

        assert result.status == "Completed", result.error_message
        assert result.final_context.to_dict() == {"n": 6, "nested": {"list": [1, "two", None]}}

    def test_execute_without_a_context_starts_empty(self, runner, workflow_name):
        seen = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="look")
            def look(ctx):
                seen.append(ctx.to_dict())
                ctx.set("looked", True)
                return ctx

        assert runner.execute(workflow_name).final_context.to_dict() == {"looked": True}
        assert runner.execute(workflow_name, None).final_context.to_dict() == {"looked": True}
        assert seen == [{}, {}]

    def test_the_callers_context_is_not_changed(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="mutate")
            def mutate(ctx):
                ctx.set("added", 1)
                return ctx

        given = cloaca.Context({"a": 1})
        result = runner.execute(workflow_name, given)
        assert result.final_context.to_dict() == {"a": 1, "added": 1}
        assert given.to_dict() == {"a": 1}

    def test_unknown_workflow_name_is_a_value_error_naming_it(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="t")
            def t(ctx):
                return ctx

        missing = workflow_name + "_does_not_exist"
        with pytest.raises(ValueError) as excinfo:
            runner.execute(missing, {})
        message = str(excinfo.value)
        assert missing in message
        assert workflow_name in message  # it lists the registered workflows
        with pytest.raises(ValueError, match=missing):
            runner.execute_async(missing, {})
        assert runner.list_executions(workflow_name=missing) == []

    def test_non_json_value_set_by_a_task_fails_the_run(self, runner, workflow_name):
        ran = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="put_object")
            def put_object(ctx):
                ran.append("put_object")
                ctx["bad"] = object()
                return ctx

            @cloaca.task(id="after", dependencies=["put_object"])
            def after(ctx):
                ran.append("after")
                return ctx

        result = runner.execute(workflow_name, {"ok": 1})

        assert result.status == "Failed"
        assert ran == ["put_object"]
        assert "put_object" in result.error_message
        assert "TypeError" in result.error_message

    @pytest.mark.parametrize(
        "bad_value", [object(), {1, 2}, b"bytes", 1 + 2j], ids=["object", "set", "bytes", "complex"]
    )
    def test_non_json_value_given_to_execute_is_refused_before_anything_is_stored(
        self, runner, workflow_name, database_url, db_query, bad_value
    ):
        ran = []
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="never")
            def never(ctx):
                ran.append("never")
                return ctx

        with pytest.raises(TypeError) as excinfo:
            runner.execute(workflow_name, {"fine": 1, "bad_key": bad_value})
        assert "bad_key" in str(excinfo.value)
        with pytest.raises(TypeError):
            runner.execute_async(workflow_name, {"bad_key": bad_value})

        assert ran == []
        assert runner.list_executions(workflow_name=workflow_name) == []
        assert db_query(
            database_url, f"SELECT count(*) FROM cloaca_executions WHERE workflow_name = {sql_str(workflow_name)}"
        ) == [("0",)]


# ---------------------------------------------------------------------------
# Failure semantics
# ---------------------------------------------------------------------------


class TestFailure:
    def test_failed_task_stops_its_dependents_and_independent_branches_finish(
        self, fresh_database_url, db_query, workflow_name
    ):
        """start -> explode -> after1 -> after2;  start -> sibling;  lone1 -> lone2."""
        token = uuid.uuid4().hex[:8]
        ran = []
        lock = threading.Lock()

        def mark(task_id):
            with lock:
                ran.append(task_id)

        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="start")
            def start(ctx):
                mark("start")
                ctx.set("start", 1)
                return ctx

            @cloaca.task(id="explode", dependencies=["start"])
            def explode(ctx):
                mark("explode")
                ctx.set("explode", "must not survive")
                raise RuntimeError(f"boom {token}")

            @cloaca.task(id="after1", dependencies=["explode"])
            def after1(ctx):
                mark("after1")
                return ctx

            @cloaca.task(id="after2", dependencies=["after1"])
            def after2(ctx):
                mark("after2")
                return ctx

            @cloaca.task(id="sibling", dependencies=["start"])
            def sibling(ctx):
                mark("sibling")
                ctx.set("sibling", 2)
                return ctx

            @cloaca.task(id="lone1")
            def lone1(ctx):
                mark("lone1")
                ctx.set("lone1", 3)
                return ctx

            @cloaca.task(id="lone2", dependencies=["lone1"])
            def lone2(ctx):
                mark("lone2")
                ctx.set("lone2", 4)
                return ctx

        with cloaca.DefaultRunner(fresh_database_url) as runner:
            result = runner.execute(workflow_name, {"input": 0})
            again = runner.get_execution(result.execution_id)

        assert sorted(ran) == ["explode", "lone1", "lone2", "sibling", "start"]
        assert result.status == "Failed"
        message = result.error_message
        assert message.startswith(f"Task 'explode' failed after 1 attempt(s): RuntimeError: boom {token}"), message
        assert "Traceback" in message
        assert "in explode" in message  # the task's own frame is in the traceback
        assert parse_time(result.start_time) <= parse_time(result.end_time)
        # final context: the outputs of completed tasks none of whose dependents completed
        final = result.final_context.to_dict()
        assert final == {"input": 0, "start": 1, "sibling": 2, "lone1": 3, "lone2": 4}

        assert again.status == "Failed"
        assert again.error_message == message
        assert again.final_context.to_dict() == final
        assert again.end_time is not None

        tasks = task_rows(db_query, fresh_database_url, result.execution_id)
        assert {t: row["status"] for t, row in tasks.items()} == {
            "start": "completed",
            "explode": "failed",
            "after1": "skipped",
            "after2": "skipped",
            "sibling": "completed",
            "lone1": "completed",
            "lone2": "completed",
        }
        assert tasks["explode"]["attempt"] == "1"
        assert tasks["explode"]["failures"] == "1"
        assert tasks["explode"]["error_type"] == "RuntimeError"
        assert f"boom {token}" in tasks["explode"]["error_message"]
        assert "Traceback" in tasks["explode"]["error_traceback"]
        assert tasks["explode"]["output_context"] is None
        for skipped in ("after1", "after2"):
            assert tasks[skipped]["attempt"] == "0"
            assert tasks[skipped]["started_at"] is None
        execution = execution_row(db_query, fresh_database_url, result.execution_id)
        assert execution["status"] == "failed"
        assert "explode" in execution["error_message"]
        assert execution["finished_at"] is not None

    def test_error_message_names_a_custom_exception_type(self, runner, workflow_name):
        class PaymentDeclined(Exception):
            pass

        define_raising(workflow_name, "charge", PaymentDeclined("card 4242 declined"))
        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert "Task 'charge' failed after 1 attempt(s)" in result.error_message
        assert "PaymentDeclined: card 4242 declined" in result.error_message
        assert "Traceback" in result.error_message

    def test_when_no_task_completes_the_final_context_is_the_input(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="fails_at_once")
            def fails_at_once(ctx):
                ctx.set("partial", True)
                raise ValueError("nope")

        result = runner.execute(workflow_name, {"given": [1, 2]})

        assert result.status == "Failed"
        assert result.final_context.to_dict() == {"given": [1, 2]}


# ---------------------------------------------------------------------------
# execute_async, get_execution, list_executions
# ---------------------------------------------------------------------------


class TestHandlesAndQueries:
    def test_execute_async_wait_timeout_then_the_run_completes(self, runner, workflow_name):
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
            assert isinstance(handle, cloaca.ExecutionHandle)
            assert isinstance(handle.execution_id, str)
            uuid.UUID(handle.execution_id)
            assert started.wait(WAIT), "the task never started"
            assert handle.status() == "Running"

            with pytest.raises(TimeoutError):
                handle.wait(timeout=0.2)

            # the run goes on: still running, visible as such
            assert handle.status() == "Running"
            running = runner.get_execution(handle.execution_id)
            assert running.status == "Running"
            assert running.end_time is None
            parse_time(running.start_time)
            assert running.error_message is None
            assert running.workflow_name == workflow_name
            listed = runner.list_executions(workflow_name=workflow_name, status="Running")
            assert [r.execution_id for r in listed] == [handle.execution_id]
            assert runner.list_executions(workflow_name=workflow_name, status="Completed") == []
        finally:
            gate.set()

        result = handle.wait(timeout=WAIT)
        assert result.status == "Completed", result.error_message
        assert result.execution_id == handle.execution_id
        assert result.final_context.to_dict() == {"k": 1, "gate": "opened"}
        assert handle.status() == "Completed"
        # waiting again gives the same result
        assert handle.wait(timeout=WAIT).final_context.to_dict() == {"k": 1, "gate": "opened"}

    def test_wait_without_timeout(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="quick")
            def quick(ctx):
                ctx.set("quick", True)
                return ctx

        handle = runner.execute_async(workflow_name)
        result = handle.wait()
        assert result.status == "Completed", result.error_message
        assert result.final_context.to_dict() == {"quick": True}
        assert handle.status() == "Completed"

    def test_execute_async_of_a_failing_run(self, runner, workflow_name):
        define_raising(workflow_name, "breaks", KeyError("missing-thing"))
        handle = runner.execute_async(workflow_name, {})
        result = handle.wait(timeout=WAIT)
        assert result.status == "Failed"
        assert handle.status() == "Failed"
        assert "Task 'breaks' failed after 1 attempt(s): KeyError" in result.error_message
        assert "missing-thing" in result.error_message

    def test_get_execution_of_a_finished_execution(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="t")
            def t(ctx):
                ctx.set("t", "done")
                return ctx

        result = runner.execute(workflow_name, {"in": 1})
        got = runner.get_execution(result.execution_id)

        assert got.status == "Completed"
        assert got.execution_id == result.execution_id
        assert got.workflow_name == workflow_name
        assert got.final_context.to_dict() == {"in": 1, "t": "done"}
        assert got.error_message is None
        assert parse_time(got.start_time) <= parse_time(got.end_time)

    def test_get_execution_of_an_unknown_id_is_a_key_error_naming_it(self, runner):
        unknown = str(uuid.uuid4())
        with pytest.raises(KeyError) as excinfo:
            runner.get_execution(unknown)
        assert unknown in str(excinfo.value)

    def test_list_executions_newest_first_and_filtered(self, fresh_database_url, workflow_name):
        good, bad = workflow_name + "_good", workflow_name + "_bad"
        with cloaca.WorkflowBuilder(good):

            @cloaca.task(id="ok")
            def ok(ctx):
                return ctx

        define_raising(bad, "fail", RuntimeError("listed failure"))

        with cloaca.DefaultRunner(fresh_database_url) as runner:
            good_ids = []
            for n in range(3):
                good_ids.append(runner.execute(good, {"n": n}).execution_id)
                time.sleep(0.01)  # distinct creation times: the order is well defined
            failed = runner.execute(bad, {"n": 99})
            assert failed.status == "Failed"

            everything = runner.list_executions()
            assert [r.execution_id for r in everything] == [failed.execution_id, *reversed(good_ids)]
            assert [r.workflow_name for r in everything] == [bad, good, good, good]
            assert [r.status for r in everything] == ["Failed", "Completed", "Completed", "Completed"]
            assert [r.final_context.get("n") for r in everything[1:]] == [2, 1, 0]
            assert "listed failure" in everything[0].error_message

            assert [r.execution_id for r in runner.list_executions(workflow_name=good)] == list(reversed(good_ids))
            assert [r.execution_id for r in runner.list_executions(status="Failed")] == [failed.execution_id]
            assert [r.execution_id for r in runner.list_executions(status="Completed")] == list(reversed(good_ids))
            assert runner.list_executions(workflow_name=bad, status="Completed") == []
            assert runner.list_executions(status="Running") == []
            assert runner.list_executions(status="Pending") == []
            assert [r.execution_id for r in runner.list_executions(limit=2)] == [failed.execution_id, good_ids[2]]
            assert runner.list_executions(workflow_name=workflow_name + "_never_ran") == []

    @pytest.mark.parametrize("status", ["Done", "Bogus"])
    def test_list_executions_with_an_unknown_status_is_a_value_error(self, runner, status):
        with pytest.raises(ValueError) as excinfo:
            runner.list_executions(status=status)
        assert status in str(excinfo.value)


# ---------------------------------------------------------------------------
# Runner lifecycle
# ---------------------------------------------------------------------------


class TestLifecycle:
    def test_shutdown_is_idempotent(self, fresh_database_url):
        runner = cloaca.DefaultRunner(fresh_database_url)
        runner.shutdown()
        runner.shutdown()

    def test_context_manager_gives_the_runner_and_shuts_it_down(self, fresh_database_url, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="t")
            def t(ctx):
                ctx.set("ran", True)
                return ctx

        with cloaca.DefaultRunner(fresh_database_url) as runner:
            assert isinstance(runner, cloaca.DefaultRunner)
            assert runner.execute(workflow_name).status == "Completed"
        runner.shutdown()  # already shut down by the with block: still fine

        # the database was released: another runner opens it and sees the run
        with cloaca.DefaultRunner(fresh_database_url) as again:
            assert len(again.list_executions(workflow_name=workflow_name)) == 1
            assert again.execute(workflow_name).status == "Completed"

    def test_context_manager_lets_exceptions_through(self, fresh_database_url):
        with pytest.raises(ZeroDivisionError):
            with cloaca.DefaultRunner(fresh_database_url):
                1 / 0

    def test_ctrl_c_interrupts_a_blocking_execute_and_the_run_goes_on(self, fresh_database_url, workflow_name):
        """execute() waits with the GIL released; a SIGINT (here simulated with
        _thread.interrupt_main) must still end the wait with KeyboardInterrupt."""
        import _thread

        started, release = threading.Event(), threading.Event()
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="slow")
            def slow(ctx):
                started.set()
                release.wait(WAIT)
                ctx.set("finished", True)
                return ctx

        def interrupt_once_running():
            if started.wait(WAIT):
                _thread.interrupt_main()

        with cloaca.DefaultRunner(fresh_database_url) as runner:
            threading.Thread(target=interrupt_once_running, daemon=True).start()
            with pytest.raises(KeyboardInterrupt):
                runner.execute(workflow_name, {})
            (running,) = runner.list_executions(workflow_name=workflow_name)
            assert running.status == "Running", "the wait ended, the execution did not"
            release.set()
            handle_result = None
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                handle_result = runner.get_execution(running.execution_id)
                if handle_result.status == "Completed":
                    break
                time.sleep(0.02)
            assert handle_result.status == "Completed"
            assert handle_result.final_context["finished"] is True

    def test_with_config(self, fresh_database_url, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="t")
            def t(ctx):
                return ctx

        config = cloaca.DefaultRunnerConfig(max_concurrent_tasks=1, task_lease_seconds=5)
        with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
            assert runner.execute(workflow_name, {"a": 1}).final_context.to_dict() == {"a": 1}


# ---------------------------------------------------------------------------
# Durability: results live in the database, not in the runner
# ---------------------------------------------------------------------------


def define_three_step_chain(name):
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="fetch")
        def fetch(ctx):
            ctx.set("rows", [1, 2, 3])
            return ctx

        @cloaca.task(id="transform", dependencies=["fetch"])
        def transform(ctx):
            ctx.set("rows", [r * 10 for r in ctx.get("rows")])
            return ctx

        @cloaca.task(id="store", dependencies=["transform"])
        def store(ctx):
            ctx.set("stored", len(ctx.get("rows")))
            return ctx


EXPECTED_CHAIN_CONTEXT = {"job": "nightly", "rows": [10, 20, 30], "stored": 3}


class TestDurability:
    def test_a_second_runner_sees_the_result(self, fresh_database_url, workflow_name):
        define_three_step_chain(workflow_name)
        with cloaca.DefaultRunner(fresh_database_url) as first:
            result = first.execute(workflow_name, {"job": "nightly"})
            assert result.status == "Completed", result.error_message
            # a second runner open at the same time on the same database
            with cloaca.DefaultRunner(fresh_database_url) as second:
                seen = second.get_execution(result.execution_id)
                assert seen.status == "Completed"
                assert seen.final_context.to_dict() == EXPECTED_CHAIN_CONTEXT
                assert [r.execution_id for r in second.list_executions(workflow_name=workflow_name)] == [
                    result.execution_id
                ]

        # and after both are gone
        with cloaca.DefaultRunner(fresh_database_url) as third:
            seen = third.get_execution(result.execution_id)
            assert seen.status == "Completed"
            assert seen.final_context.to_dict() == EXPECTED_CHAIN_CONTEXT
            assert seen.workflow_name == workflow_name

    def test_a_separate_process_sees_the_result(self, fresh_database_url, workflow_name, run_scenario):
        define_three_step_chain(workflow_name)
        with cloaca.DefaultRunner(fresh_database_url) as runner:
            result = runner.execute(workflow_name, {"job": "nightly"})
        assert result.status == "Completed", result.error_message

        done = run_scenario("show_execution.py", fresh_database_url, result.execution_id)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert "result" in shown, shown
        assert shown["result"]["status"] == "Completed"
        assert shown["result"]["execution_id"] == result.execution_id
        assert shown["result"]["workflow_name"] == workflow_name
        assert shown["result"]["final_context"] == EXPECTED_CHAIN_CONTEXT
        assert shown["result"]["error_message"] is None

        unknown = str(uuid.uuid4())
        done = run_scenario("show_execution.py", fresh_database_url, unknown)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown.get("error_type") == "ExecutionNotFoundError", shown
        assert shown["is_key_error"], "still a KeyError, as before the hierarchy"
        assert unknown in shown["message"]

    def test_the_tables_hold_the_state(self, fresh_database_url, db_query, workflow_name):
        define_three_step_chain(workflow_name)
        with cloaca.DefaultRunner(fresh_database_url) as runner:
            result = runner.execute(workflow_name, {"job": "nightly"})
        assert result.status == "Completed", result.error_message

        execution = execution_row(db_query, fresh_database_url, result.execution_id)
        assert execution["status"] == "completed"
        assert execution["workflow_name"] == workflow_name
        version = execution["workflow_version"]
        assert len(version) == 64 and all(ch in "0123456789abcdef" for ch in version), version
        assert json.loads(execution["input_context"]) == {"job": "nightly"}
        assert json.loads(execution["final_context"]) == EXPECTED_CHAIN_CONTEXT
        assert execution["error_message"] is None
        assert execution["tasks_remaining"] == "0"
        assert int(execution["created_at"]) <= int(execution["started_at"]) <= int(execution["finished_at"])

        tasks = task_rows(db_query, fresh_database_url, result.execution_id)
        assert sorted(tasks) == ["fetch", "store", "transform"]
        for task_id, row in tasks.items():
            assert row["status"] == "completed", (task_id, row)
            assert row["attempt"] == "1", (task_id, row)
            assert row["failures"] == "0", (task_id, row)
            assert row["max_attempts"] == "1", (task_id, row)
            assert row["workflow_name"] == workflow_name
            assert row["workflow_version"] == version
            assert row["error_type"] is None and row["error_message"] is None
            assert int(row["started_at"]) <= int(row["finished_at"])
        assert json.loads(tasks["fetch"]["output_context"]) == {"job": "nightly", "rows": [1, 2, 3]}
        assert json.loads(tasks["transform"]["output_context"]) == {"job": "nightly", "rows": [10, 20, 30]}
        assert json.loads(tasks["store"]["output_context"]) == EXPECTED_CHAIN_CONTEXT
        # a dependent starts only after its dependency was recorded as completed
        assert int(tasks["transform"]["started_at"]) >= int(tasks["fetch"]["finished_at"])
        assert int(tasks["store"]["started_at"]) >= int(tasks["transform"]["finished_at"])
