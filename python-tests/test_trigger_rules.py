"""Trigger rules: the builders and their dicts, validation when a task is
decorated and when its workflow is built, the meaning of every condition and
combinator on real runs, the Skipped state with its reason, where the failure
cascade stops, and the rule as part of the workflow version.

Each run goes through a real runner on a real database of the backend under test.
"""

import logging
import threading
import time

import pytest

import cloaca

WAIT = 60  # seconds: a bound for waits that should end almost at once

OPERATORS = ["Equals", "NotEquals", "GreaterThan", "LessThan", "Contains", "NotContains", "Exists", "NotExists"]


@pytest.fixture
def runner(fresh_database_url):
    with cloaca.DefaultRunner(fresh_database_url) as r:
        yield r


def records(runner, result):
    return {t.task_id: t for t in runner.get_execution_tasks(result.execution_id)}


def states(runner, result):
    return {t.task_id: (t.status, t.skip_reason) for t in runner.get_execution_tasks(result.execution_id)}


# ---------------------------------------------------------------- builders ---


class TestBuilders:
    def test_each_builder_returns_its_plain_dict(self):
        assert cloaca.task_success("a") == {"type": "TaskSuccess", "task_name": "a"}
        assert cloaca.task_failed(task_name="a") == {"type": "TaskFailed", "task_name": "a"}
        assert cloaca.task_skipped("a") == {"type": "TaskSkipped", "task_name": "a"}
        assert cloaca.always() == {"type": "Always"}
        assert cloaca.context_value("k", "==", (1, 2)) == {
            "type": "ContextValue",
            "key": "k",
            "operator": "Equals",
            "value": [1, 2],
        }
        a, b = cloaca.task_success("a"), cloaca.context_value(key="n", operator="gt", value=3)
        assert cloaca.all_of(a, b) == {"type": "All", "conditions": [a, b]}
        assert cloaca.any_of(a) == {"type": "Any", "conditions": [a]}
        assert cloaca.none_of() == {"type": "None", "conditions": []}
        assert type(cloaca.none_of()) is dict

    @pytest.mark.parametrize(
        "given,canonical",
        [
            ("EQUALS", "Equals"),
            ("equals", "Equals"),
            ("==", "Equals"),
            ("eq", "Equals"),
            ("not_equals", "NotEquals"),
            ("!=", "NotEquals"),
            ("NE", "NotEquals"),
            ("Greater_Than", "GreaterThan"),
            (">", "GreaterThan"),
            ("GT", "GreaterThan"),
            ("lessthan", "LessThan"),
            ("<", "LessThan"),
            ("lt", "LessThan"),
            ("CONTAINS", "Contains"),
            ("Not_Contains", "NotContains"),
            ("exists", "Exists"),
            ("NOT_EXISTS", "NotExists"),
        ],
    )
    def test_operator_aliases(self, given, canonical):
        assert cloaca.context_value("k", given, 1)["operator"] == canonical

    @pytest.mark.parametrize("refused", [">=", "<=", "=", "in", "Bogus_Op"])
    def test_unknown_operators_are_refused_as_given(self, refused):
        with pytest.raises(ValueError, match="unknown operator") as caught:
            cloaca.context_value("k", refused, 1)
        message = str(caught.value)
        assert repr(refused).replace("'", '"') in message
        assert ", ".join(OPERATORS) in message

    def test_value_is_checked_before_the_operator_and_must_be_json(self):
        with pytest.raises(ValueError, match="context_value: value not JSON-serializable"):
            cloaca.context_value("k", "bogus", object())
        with pytest.raises(TypeError):
            cloaca.context_value(1, "eq", 1)
        with pytest.raises(TypeError):
            cloaca.task_success(3)
        with pytest.raises(TypeError):
            cloaca.context_value("k", "eq")

    def test_combinators_check_only_that_conditions_are_json(self):
        assert cloaca.all_of({"anything": [1]}) == {"type": "All", "conditions": [{"anything": [1]}]}
        with pytest.raises(ValueError, match="trigger rule condition"):
            cloaca.any_of(cloaca.always(), object())


# -------------------------------------------------------------- validation ---


class TestValidation:
    @pytest.mark.parametrize(
        "rule",
        [
            cloaca.all_of(cloaca.any_of(cloaca.task_success("a"))),
            [cloaca.task_success("a")],
            {"type": "ContextValue", "key": "k", "operator": "eq", "value": 1},
            {"type": "ContextValue", "key": "k", "operator": "Equals"},
            {"type": "TaskSuccess"},
            {"type": "Sometimes"},
            "always",
            cloaca.all_of({"anything": 1}),
        ],
    )
    def test_bad_shapes_are_refused_at_decoration(self, workflow_name, rule):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError, match=r"@cloaca\.task\(trigger_rules=\.\.\.\): invalid trigger rule"):

                @cloaca.task(trigger_rules=rule)
                def t(ctx):
                    return ctx

            @cloaca.task()
            def keep(ctx):
                return ctx

    def test_values_that_are_not_json_are_refused(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError, match="not JSON-serializable"):

                @cloaca.task(trigger_rules={"type": "Always", "x": object()})
                def t(ctx):
                    return ctx

            @cloaca.task()
            def keep(ctx):
                return ctx

    def test_a_bare_condition_and_extra_keys_are_accepted(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(
                trigger_rules={"type": "ContextValue", "key": "go", "operator": "Exists", "value": None, "x": 1}
            )
            def t(ctx):
                ctx["ran"] = True
                return ctx

        assert runner.execute(workflow_name, {"go": 1}).final_context["ran"] is True
        skipped = runner.execute(workflow_name, {})
        assert skipped.status == "Completed"
        assert states(runner, skipped) == {"t": ("Skipped", "trigger_rule")}

    def test_an_unknown_task_name_is_refused_when_the_block_ends(self, workflow_name):
        with pytest.raises(ValueError) as caught:
            with cloaca.WorkflowBuilder(workflow_name):

                @cloaca.task()
                def a(ctx):
                    return ctx

                @cloaca.task(dependencies=["a"], trigger_rules=cloaca.task_failed("nope"))
                def b(ctx):
                    return ctx

        assert "'b'" in str(caught.value).replace('"', "'") and "'nope'" in str(caught.value).replace('"', "'")

    def test_build_refuses_an_unknown_name_too(self, workflow_name):
        builder = cloaca.WorkflowBuilder(workflow_name)
        builder.__enter__()

        @cloaca.task(trigger_rules=cloaca.task_success("ghost"))
        def x(ctx):
            return ctx

        with pytest.raises(ValueError, match="ghost"):
            builder.build()
        with pytest.raises(ValueError, match="ghost"):
            builder.__exit__(None, None, None)

    def test_a_reference_to_a_non_ancestor_logs_a_warning(self, workflow_name, caplog):
        caplog.set_level(logging.WARNING, logger="cloaca.workflow")
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def side(ctx):
                return ctx

            @cloaca.task(trigger_rules=cloaca.task_success("side"))
            def other(ctx):
                return ctx

        warnings = [r.getMessage() for r in caplog.records if r.name == "cloaca.workflow"]
        assert len(warnings) == 1 and '"side"' in warnings[0] and '"other"' in warnings[0]

    def test_the_rule_is_part_of_the_workflow_version(self, workflow_name):
        def build(rule):
            with cloaca.WorkflowBuilder(workflow_name) as builder:

                @cloaca.task()
                def a(ctx):
                    return ctx

                if rule is None:

                    @cloaca.task(dependencies=["a"])
                    def b(ctx):
                        return ctx
                else:

                    @cloaca.task(dependencies=["a"], trigger_rules=rule)
                    def b(ctx):
                        return ctx

            return repr(builder.build())

        versions = {
            build(None),
            build(cloaca.always()),
            build(cloaca.task_success("a")),
            build(cloaca.context_value("k", "eq", 1)),
            build(cloaca.context_value("k", "eq", 2)),
        }
        assert len(versions) == 5
        assert build(cloaca.context_value("k", "==", 1)) == build(
            {"type": "ContextValue", "key": "k", "operator": "Equals", "value": 1, "extra": 0}
        )


# ---------------------------------------------------------------- meaning ---

CASES = [
    # (operator, expected value, input, runs)
    ("Exists", None, {"k": None}, True),
    ("Exists", None, {}, False),
    ("NotExists", None, {}, True),
    ("NotExists", None, {"k": 1}, False),
    ("Equals", 1, {"k": 1}, True),
    ("Equals", 1.0, {"k": 1}, False),
    ("Equals", 1, {"k": True}, False),
    ("Equals", {"a": [1]}, {"k": {"a": [1]}}, True),
    ("NotEquals", 1, {}, True),
    ("NotEquals", 1, {"k": 1}, False),
    ("GreaterThan", 1.5, {"k": 2}, True),
    ("GreaterThan", 2, {"k": 2}, False),
    ("GreaterThan", 1, {"k": "2"}, False),
    ("LessThan", 0, {"k": -1.5}, True),
    ("LessThan", 0, {}, False),
    ("Contains", "ell", {"k": "hello"}, True),
    ("Contains", "a", {"k": [1, "a"]}, True),
    ("Contains", 1, {"k": [1.0]}, False),
    ("Contains", "a", {"k": {"a": 1}}, False),
    ("NotContains", 5, {"k": 5}, True),
    ("NotContains", "x", {}, True),
    ("NotContains", "ell", {"k": "hello"}, False),
]


class TestMeaning:
    def test_every_operator_on_a_real_run(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            for i, (op, value, _, _) in enumerate(CASES):

                def body(ctx, i=i):
                    ctx[f"ran_{i}"] = True
                    return ctx

                cloaca.task(id=f"case_{i}", trigger_rules=cloaca.context_value("k", op, value))(body)

        failures = []
        for i, (op, value, given, runs) in enumerate(CASES):
            result = runner.execute(workflow_name, given)
            assert result.status == "Completed"
            record = records(runner, result)[f"case_{i}"]
            if (record.status == "Completed") != runs:
                failures.append((op, value, given, runs, record.status))
        assert failures == []

    def test_combinators_and_empty_combinators(self, runner, workflow_name):
        yes, no = cloaca.context_value("x", "eq", 1), cloaca.context_value("x", "eq", 2)
        rules = {
            "all_true": cloaca.all_of(yes, yes),
            "all_mixed": cloaca.all_of(yes, no),
            "any_mixed": cloaca.any_of(no, yes),
            "any_false": cloaca.any_of(no, no),
            "none_false": cloaca.none_of(no),
            "none_mixed": cloaca.none_of(no, yes),
            "all_empty": cloaca.all_of(),
            "none_empty": cloaca.none_of(),
            "any_empty": cloaca.any_of(),
            "always": cloaca.always(),
        }
        with cloaca.WorkflowBuilder(workflow_name):
            for task_id, rule in rules.items():
                cloaca.task(id=task_id, trigger_rules=rule)(lambda ctx: ctx)

        result = runner.execute(workflow_name, {"x": 1})
        ran = {t for t, (status, _) in states(runner, result).items() if status == "Completed"}
        assert ran == {"all_true", "any_mixed", "none_false", "all_empty", "none_empty", "always"}
        assert result.status == "Completed"

    def test_a_context_value_sees_the_deeply_merged_input(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def left(ctx):
                ctx["tags"] = ["l"]
                return ctx

            @cloaca.task()
            def right(ctx):
                ctx["tags"] = ["r"]
                return ctx

            @cloaca.task(dependencies=["left", "right"], trigger_rules=cloaca.context_value("tags", "contains", "l"))
            def join(ctx):
                ctx["joined"] = sorted(ctx["tags"])
                return ctx

        result = runner.execute(workflow_name, {})
        assert result.final_context["joined"] == ["l", "r"]


# ------------------------------------------------- skipping and the cascade ---


def declare_fallback(workflow_name, fail=True):
    """pull fails (no retries); fallback runs only when it failed; report runs after
    fallback with the default rule; after_pull depends on pull with the default rule."""
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task()
        def pull(ctx):
            if ctx.get("fail"):
                raise RuntimeError("upstream down")
            ctx["pulled"] = True
            return ctx

        @cloaca.task(dependencies=["pull"], trigger_rules=cloaca.task_failed("pull"))
        def fallback(ctx):
            ctx["fallback"] = True
            return ctx

        @cloaca.task(dependencies=["fallback"])
        def report(ctx):
            ctx["reported"] = True
            return ctx

        @cloaca.task(dependencies=["pull"])
        def after_pull(ctx):
            return ctx

        @cloaca.task(dependencies=["after_pull"])
        def after_after(ctx):
            return ctx


class TestSkipping:
    def test_a_fallback_runs_when_its_dependency_failed_and_the_cascade_stops_there(self, runner, workflow_name):
        declare_fallback(workflow_name)
        result = runner.execute(workflow_name, {"fail": True})
        assert result.status == "Failed", "a failed task fails the execution even when a fallback handled it"
        assert "Task 'pull' failed" in result.error_message
        assert states(runner, result) == {
            "pull": ("Failed", None),
            "fallback": ("Completed", None),
            "report": ("Completed", None),
            "after_pull": ("Skipped", "upstream_failed"),
            "after_after": ("Skipped", "upstream_failed"),
        }
        assert result.final_context["reported"] is True

    def test_when_the_dependency_succeeds_the_fallback_is_skipped_by_its_rule(self, runner, workflow_name):
        declare_fallback(workflow_name)
        result = runner.execute(workflow_name, {})
        assert result.status == "Completed"
        assert states(runner, result) == {
            "pull": ("Completed", None),
            "fallback": ("Skipped", "trigger_rule"),
            "report": ("Completed", None),
            "after_pull": ("Completed", None),
            "after_after": ("Completed", None),
        }
        skipped = [e for e in runner.get_execution_events(result.execution_id) if e.kind == "task_skipped"]
        assert [(e.task_id, e.detail) for e in skipped] == [("fallback", "trigger_rule")]
        assert records(runner, result)["fallback"].to_dict()["skip_reason"] == "trigger_rule"

    def test_a_task_with_a_rule_waits_for_every_dependency(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def fails(ctx):
                raise ValueError("no")

            @cloaca.task()
            def slow(ctx):
                import time

                time.sleep(0.3)
                ctx["slow"] = True
                return ctx

            @cloaca.task(dependencies=["fails", "slow"], trigger_rules=cloaca.always())
            def cleanup(ctx):
                ctx["saw_slow"] = ctx.get("slow", False)
                return ctx

            @cloaca.task(dependencies=["fails", "slow"])
            def default(ctx):
                return ctx

        result = runner.execute(workflow_name, {})
        tasks = records(runner, result)
        assert (tasks["cleanup"].status, tasks["default"].status) == ("Completed", "Skipped")
        assert result.final_context["saw_slow"] is True
        assert tasks["default"].skip_reason == "upstream_failed"

    def test_task_skipped_is_true_for_either_reason_and_rule_skips_do_not_block(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(trigger_rules=cloaca.context_value("run", "exists", None))
            def optional(ctx):
                return ctx

            @cloaca.task(dependencies=["optional"])
            def after(ctx):
                ctx["after"] = True
                return ctx

            @cloaca.task(dependencies=["optional"], trigger_rules=cloaca.task_skipped("optional"))
            def when_skipped(ctx):
                ctx["noticed"] = True
                return ctx

        result = runner.execute(workflow_name, {})
        assert result.status == "Completed"
        assert states(runner, result) == {
            "optional": ("Skipped", "trigger_rule"),
            "after": ("Completed", None),
            "when_skipped": ("Completed", None),
        }
        assert result.final_context["after"] and result.final_context["noticed"]

    def test_a_namespaced_name_and_a_non_ancestor_that_is_unfinished(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def a(ctx):
                return ctx

            @cloaca.task(dependencies=["a"], trigger_rules=cloaca.task_success(f"public::embedded::{workflow_name}::a"))
            def b(ctx):
                return ctx

            @cloaca.task(
                trigger_rules=cloaca.any_of(cloaca.task_success("a"), cloaca.task_failed("a"), cloaca.task_skipped("a"))
            )
            def root_asking_about_a(ctx):
                return ctx

        result = runner.execute(workflow_name, {})
        assert states(runner, result) == {
            "a": ("Completed", None),
            "b": ("Completed", None),
            "root_asking_about_a": ("Skipped", "trigger_rule"),
        }

    def test_an_execution_whose_every_task_is_skipped_completes_with_its_input(self, runner, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(trigger_rules=cloaca.any_of())
            def never(ctx):
                return ctx

            @cloaca.task(dependencies=["never"], trigger_rules=cloaca.task_success("never"))
            def after(ctx):
                return ctx

        result = runner.execute(workflow_name, {"given": 1})
        assert result.status == "Completed"
        assert result.final_context.to_dict() == {"given": 1}
        assert states(runner, result) == {"never": ("Skipped", "trigger_rule"), "after": ("Skipped", "trigger_rule")}

    def test_a_default_rule_task_after_a_rule_skip_runs_without_its_output(
        self, runner, workflow_name, db_query, fresh_database_url
    ):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(trigger_rules=cloaca.any_of())
            def never(ctx):
                ctx["never"] = True
                return ctx

            @cloaca.task(dependencies=["never"])
            def after(ctx):
                ctx["after_saw"] = sorted(ctx.to_dict())
                return ctx

        result = runner.execute(workflow_name, {"given": 1})
        assert states(runner, result) == {"never": ("Skipped", "trigger_rule"), "after": ("Completed", None)}
        assert result.final_context["after_saw"] == []
        ((started,),) = db_query(
            fresh_database_url, f"SELECT started_at FROM cloaca_executions WHERE id = '{result.execution_id}'"
        )
        assert started is not None, "the execution started though its only root never ran"

    def test_retrying_an_execution_decides_its_rules_again(self, runner, workflow_name, tmp_path):
        flag = tmp_path / "fail"
        flag.write_text("1")
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def pull(ctx):
                if flag.exists():
                    raise RuntimeError("down")
                return ctx

            @cloaca.task(dependencies=["pull"], trigger_rules=cloaca.task_failed("pull"))
            def fallback(ctx):
                return ctx

            @cloaca.task(dependencies=["pull"], trigger_rules=cloaca.task_success("pull"))
            def on_success(ctx):
                ctx["ok"] = True
                return ctx

        first = runner.execute(workflow_name, {})
        assert first.status == "Failed"
        assert states(runner, first)["on_success"] == ("Skipped", "trigger_rule")
        flag.unlink()
        final = runner.retry_execution(first.execution_id).wait(timeout=60)
        assert final.status == "Completed"
        assert states(runner, final) == {
            "pull": ("Completed", None),
            "fallback": ("Completed", None),  # completed in the first round: kept
            "on_success": ("Completed", None),  # decided again in the new round
        }


def declare_slow_then_always(workflow_name):
    """slow (waits for the returned gate) -> after (rule always(); sets "after"). Returns the gate."""
    gate = threading.Event()
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task()
        def slow(ctx):
            gate.wait(WAIT)
            return ctx

        @cloaca.task(dependencies=["slow"], trigger_rules=cloaca.always())
        def after(ctx):
            ctx["after"] = True
            return ctx

    return gate


class TestStopped:
    def test_tasks_of_a_timed_out_execution_are_skipped_as_stopped(self, fresh_database_url, workflow_name):
        gate = declare_slow_then_always(workflow_name)
        config = cloaca.DefaultRunnerConfig(pipeline_timeout_seconds=0.3)
        with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
            result = runner.execute(workflow_name, {})
            gate.set()
            assert result.status == "Failed"
            assert states(runner, result) == {"slow": ("Skipped", "stopped"), "after": ("Skipped", "stopped")}


# ------------------------------------------------ steering and durability ---


def task_is(runner, execution_id, task_id, wanted):
    return {t.task_id: t.status for t in runner.get_execution_tasks(execution_id)}[task_id] == wanted


class TestSteeringAndRecovery:
    def test_a_task_its_rule_readies_during_a_pause_is_held(self, runner, workflow_name, wait_until):
        gate = declare_slow_then_always(workflow_name)
        handle = runner.execute_async(workflow_name, {})
        wait_until(lambda: task_is(runner, handle.execution_id, "slow", "Running"), WAIT, "slow to run")
        runner.pause_execution(handle.execution_id)
        gate.set()
        wait_until(lambda: task_is(runner, handle.execution_id, "after", "Paused"), WAIT, "after to be held")
        time.sleep(0.3)
        assert runner.get_execution(handle.execution_id).status == "Paused"
        runner.resume_execution(handle.execution_id)
        assert handle.wait(WAIT).final_context["after"] is True

    def test_a_run_with_rules_recovers_after_its_runner_is_killed(
        self, fresh_database_url, workflow_name, run_scenario, wait_until, tmp_path
    ):
        side, gate, id_file = tmp_path / "side", tmp_path / "gate", tmp_path / "id"
        common = [
            "--url",
            fresh_database_url,
            "--workflow",
            workflow_name,
            "--side-file",
            side,
            "--gate",
            gate,
            "--rules",
        ]
        worker = run_scenario.start("gated_runner.py", *common, "--start", id_file)
        wait_until(
            lambda: side.exists() and "gated" in side.read_text() and id_file.exists(),
            WAIT,
            "the gated task to start",
            proc=worker,
        )
        execution_id = id_file.read_text()
        worker.kill()
        worker.wait(WAIT)
        gate.touch()
        replacement = run_scenario.start("gated_runner.py", *common)
        with cloaca.DefaultRunner(fresh_database_url) as observer:
            wait_until(
                lambda: observer.get_execution(execution_id).status == "Completed", WAIT, "recovery", proc=replacement
            )
            by_id = {t.task_id: (t.status, t.skip_reason) for t in observer.get_execution_tasks(execution_id)}
        (tmp_path / "gate.stop").touch()
        assert by_id == {
            "first": ("Completed", None),
            "gated": ("Completed", None),
            "last": ("Completed", None),
            "fallback": ("Skipped", "trigger_rule"),
        }
        lines = [line.split()[0] for line in side.read_text().splitlines()]
        assert lines.count("first") == 1 and lines.count("last") == 1 and "fallback" not in lines
