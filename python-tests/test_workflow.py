"""Defining workflows: @cloaca.task, WorkflowBuilder, Workflow and register_workflow_constructor.

Covers where @task may be used and what it returns, task ids and dependencies, retry options
checked at decoration time, the builder's errors (unknown task, wrong type,
empty workflow, cycles, unknown dependencies), registration by the `with`
block, the content-hash version, and the DAG queries of a Workflow.

The workflow registry is process-wide, so every test uses its own workflow
name (the `workflow_name` fixture of conftest.py).
"""

import inspect
import re

import pytest

import cloaca
from conftest import DIAMOND, WIDE

# --------------------------------------------------------------------------- helpers


@pytest.fixture
def runner(fresh_database_url):
    with cloaca.DefaultRunner(fresh_database_url) as runner:
        yield runner


def assert_message_names(error, *needles):
    message = str(error.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not named in {type(error.value).__name__}: {message!r}"


def marker_task(task_id):
    """A distinct task function that records that it ran under key `<task_id>_ran`."""

    def run(context):
        context.set(f"{task_id}_ran", True)
        return context

    run.__name__ = run.__qualname__ = task_id
    return run


def declare(tasks, task_options=None):
    """Decorate one marker task per entry of `tasks` ({task_id: [dependency ids]}).

    Must be called inside a `with WorkflowBuilder(...)` block. Returns the decorated functions.
    """
    task_options = task_options or {}
    return {
        task_id: cloaca.task(id=task_id, dependencies=list(deps), **task_options.get(task_id, {}))(marker_task(task_id))
        for task_id, deps in tasks.items()
    }


def build(name, tasks, description=None, tags=None, task_options=None):
    """Define `tasks` in a `with WorkflowBuilder(name)` block and return the built Workflow.

    Every task is also added explicitly, so build() sees all of them whether or
    not it includes the block's decorated tasks by itself.
    """
    with cloaca.WorkflowBuilder(name) as builder:
        if description is not None:
            builder.description(description)
        for key, value in (tags or {}).items():
            builder.tag(key, value)
        for task_id in declare(tasks, task_options):
            builder.add_task(task_id)
        workflow = builder.build()
    return workflow


def assert_topological(order, tasks):
    """`order` lists every task once, each after all of its dependencies."""
    assert sorted(order) == sorted(tasks), order
    position = {task_id: i for i, task_id in enumerate(order)}
    for task_id, deps in tasks.items():
        for dep in deps:
            assert position[dep] < position[task_id], f"{dep} must precede {task_id} in {order}"


def sorted_levels(levels):
    return [sorted(level) for level in levels]


# --------------------------------------------------------------------------- @cloaca.task


class TestTaskDecorator:
    def test_outside_a_builder_is_a_value_error(self):
        def orphan(context):
            return context

        with pytest.raises(ValueError) as error:
            cloaca.task(id="orphan")(orphan)
        assert_message_names(error, "WorkflowBuilder")

    def test_outside_after_a_block_has_ended(self, workflow_name):
        build(workflow_name, {"inside": []})

        def later(context):
            return context

        with pytest.raises(ValueError):
            cloaca.task()(later)

    def test_outside_after_a_block_that_raised(self, workflow_name):
        with pytest.raises(RuntimeError, match="body failed"):
            with cloaca.WorkflowBuilder(workflow_name):
                raise RuntimeError("body failed")

        def later(context):
            return context

        with pytest.raises(ValueError):
            cloaca.task()(later)

    def test_returns_the_same_function(self, workflow_name):
        def compute(context):
            return context

        with cloaca.WorkflowBuilder(workflow_name):
            decorated = cloaca.task()(compute)
        assert decorated is compute

    def test_decorated_function_still_runs_when_called(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def double(context):
                context.set("n", context.get("n") * 2)
                return context

        result = double(cloaca.Context({"n": 21}))
        assert result.get("n") == 42

    def test_decorated_async_function_stays_a_coroutine_function(self, workflow_name):
        async def fetch(context):
            return context

        with cloaca.WorkflowBuilder(workflow_name):
            decorated = cloaca.task()(fetch)
        assert decorated is fetch
        assert inspect.iscoroutinefunction(decorated)

    def test_id_defaults_to_the_function_name(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name) as builder:

            @cloaca.task()
            def compute_total(context):
                return context

            builder.add_task(compute_total)
            workflow = builder.build()
        assert compute_total.__cloaca_task_id__ == "compute_total"
        assert workflow.topological_sort() == ["compute_total"]

    def test_explicit_id(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name) as builder:

            @cloaca.task(id="custom_id")
            def some_function(context):
                return context

            builder.add_task("custom_id")
            workflow = builder.build()
        assert some_function.__cloaca_task_id__ == "custom_id"
        assert workflow.topological_sort() == ["custom_id"]

    def test_dependencies_as_strings_and_functions(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name) as builder:

            @cloaca.task(id="first_custom")
            def first(context):
                return context

            @cloaca.task()
            def second(context):
                return context

            @cloaca.task(dependencies=[first, "second"])
            def third(context):
                return context

            for task_id in ("first_custom", "second", "third"):
                builder.add_task(task_id)
            workflow = builder.build()
        assert sorted(workflow.get_roots()) == ["first_custom", "second"]
        assert workflow.get_leaves() == ["third"]
        assert sorted_levels(workflow.get_execution_levels()) == [["first_custom", "second"], ["third"]]

    def test_add_task_of_a_function_uses_its_task_id(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name) as builder:

            @cloaca.task(id="renamed_step")
            def step(context):
                return context

            builder.add_task(step)
            workflow = builder.build()
        assert workflow.topological_sort() == ["renamed_step"]

    def test_duplicate_id_in_one_block_is_a_value_error(self, workflow_name):
        with pytest.raises(ValueError) as error:
            with cloaca.WorkflowBuilder(workflow_name):

                @cloaca.task(id="twice_used")
                def one(context):
                    return context

                @cloaca.task(id="twice_used")
                def two(context):
                    return context

        assert_message_names(error, "twice_used")

    def test_duplicate_of_a_default_id(self, workflow_name):
        with pytest.raises(ValueError) as error:
            with cloaca.WorkflowBuilder(workflow_name):

                @cloaca.task()
                def step(context):
                    return context

                @cloaca.task(id="step")
                def other(context):
                    return context

        assert_message_names(error, "step")

    def test_same_id_in_two_workflows_is_fine(self, workflow_name):
        first = build(f"{workflow_name}_a", {"shared_id": []})
        second = build(f"{workflow_name}_b", {"shared_id": []})
        assert first.topological_sort() == second.topological_sort() == ["shared_id"]

    @pytest.mark.parametrize(
        "options",
        [
            {"retry_backoff": "fixed"},
            {"retry_backoff": "linear"},
            {"retry_backoff": "exponential"},
            {"retry_condition": "all_errors"},
            {"retry_condition": "never"},
            {"retry_condition": "transient_only"},
            {"retry_condition": "ConnectionResetError"},
            {"retry_attempts": 0, "retry_delay_ms": 0, "retry_max_delay_ms": 0},
            {"retry_attempts": 5, "retry_delay_ms": 10, "retry_max_delay_ms": 100, "retry_jitter": False},
            {"timeout_seconds": 1},
            {"timeout_seconds": 0.5},
            {"timeout_seconds": None},
        ],
        ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
    )
    def test_valid_retry_options_are_accepted(self, workflow_name, options):
        workflow = build(workflow_name, {"configured": []}, task_options={"configured": options})
        assert workflow.topological_sort() == ["configured"]

    @pytest.mark.parametrize(
        "option, value",
        [
            ("retry_backoff", "sideways"),
            ("retry_backoff", ""),
            ("retry_backoff", "exponentially"),
            ("retry_condition", ""),
            ("retry_attempts", -1),
            ("retry_attempts", -3),
            ("retry_delay_ms", -1),
            ("retry_max_delay_ms", -5),
            ("timeout_seconds", -1),
            ("timeout_seconds", 0),
        ],
    )
    def test_invalid_retry_option_is_a_value_error_at_decoration(self, workflow_name, option, value):
        def misconfigured(context):
            return context

        with cloaca.WorkflowBuilder(workflow_name) as builder:
            declare({"healthy": []})
            with pytest.raises(ValueError) as error:
                cloaca.task(**{option: value})(misconfigured)
            # The refused task was not registered; the block still completes.
            with pytest.raises(ValueError, match="not found in registry"):
                builder.add_task("misconfigured")
        assert_message_names(error, option, str(value) if value != "" else '""')


# --------------------------------------------------------------------------- WorkflowBuilder


class TestWorkflowBuilder:
    def test_description_and_tags(self, workflow_name):
        workflow = build(
            workflow_name, {"only": []}, description="Moves the data", tags={"team": "data", "tier": "gold"}
        )
        assert workflow.name == workflow_name
        assert workflow.description == "Moves the data"
        assert workflow.tags == {"team": "data", "tier": "gold"}

    def test_no_description_and_no_tags(self, workflow_name):
        workflow = build(workflow_name, {"only": []})
        assert workflow.description in ("", None)
        assert workflow.tags == {}

    def test_add_task_unknown_id(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name) as builder:
            declare({"real": []})
            with pytest.raises(ValueError) as error:
                builder.add_task("imaginary_task")
        assert_message_names(error, "not found in registry", "imaginary_task")

    def test_add_task_undecorated_function(self, workflow_name):
        def never_decorated(context):
            return context

        with cloaca.WorkflowBuilder(workflow_name) as builder:
            declare({"real": []})
            with pytest.raises(ValueError) as error:
                builder.add_task(never_decorated)
        assert_message_names(error, "not found in registry", "never_decorated")

    @pytest.mark.parametrize("value", [42, 3.5, None, ["real"]], ids=["int", "float", "None", "list"])
    def test_add_task_of_another_type_is_a_type_error(self, workflow_name, value):
        with cloaca.WorkflowBuilder(workflow_name) as builder:
            declare({"real": []})
            with pytest.raises(TypeError) as error:
                builder.add_task(value)
        assert_message_names(error, "a string task ID or a function object")

    def test_build_of_an_empty_builder(self, workflow_name):
        with pytest.raises(ValueError) as error:
            cloaca.WorkflowBuilder(workflow_name).build()
        assert_message_names(error, "cannot be empty")

    def test_empty_with_block(self, workflow_name):
        with pytest.raises(ValueError) as error:
            with cloaca.WorkflowBuilder(workflow_name) as builder:
                builder.description("nothing inside")
        assert_message_names(error, "cannot be empty")

    def test_cycle_names_the_tasks_in_it(self, workflow_name):
        tasks = {"outside": [], "alpha": ["gamma", "outside"], "beta": ["alpha"], "gamma": ["beta"]}
        with pytest.raises(ValueError) as error:
            build(workflow_name, tasks)
        assert_message_names(error, "alpha", "beta", "gamma")
        assert "cycle" in str(error.value).lower()

    def test_self_dependency_is_a_cycle(self, workflow_name):
        with pytest.raises(ValueError) as error:
            build(workflow_name, {"ouroboros": ["ouroboros"]})
        assert_message_names(error, "ouroboros")

    def test_cycle_found_when_leaving_the_block(self, workflow_name):
        with pytest.raises(ValueError) as error:
            with cloaca.WorkflowBuilder(workflow_name):
                declare({"ping": ["pong"], "pong": ["ping"]})
        assert_message_names(error, "ping", "pong")

    def test_unknown_dependency_names_task_and_dependency(self, workflow_name):
        with pytest.raises(ValueError) as error:
            build(workflow_name, {"present": [], "needy": ["present", "ghost_task"]})
        assert_message_names(error, "needy", "ghost_task")

    def test_unknown_dependency_found_when_leaving_the_block(self, workflow_name):
        with pytest.raises(ValueError) as error:
            with cloaca.WorkflowBuilder(workflow_name):
                declare({"needy": ["ghost_task"]})
        assert_message_names(error, "needy", "ghost_task")

    def test_with_block_registers_the_workflow(self, workflow_name, runner):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task()
            def double(context):
                context.set("doubled", context.get("x") * 2)
                return context

        result = runner.execute(workflow_name, {"x": 21})
        assert result.status == "Completed", result.error_message
        assert result.final_context.get("doubled") == 42

    def test_registering_the_same_name_again_replaces_it(self, workflow_name, runner):
        def stamper(version):
            def stamp(context):
                context.set("version", version)
                return context

            return stamp

        for version in (1, 2):
            with cloaca.WorkflowBuilder(workflow_name):
                cloaca.task(id="stamp")(stamper(version))

            result = runner.execute(workflow_name)
            assert result.status == "Completed", result.error_message
            assert result.final_context.get("version") == version

    def test_a_block_that_raised_registers_nothing(self, workflow_name, runner):
        with pytest.raises(RuntimeError, match="abandoned"):
            with cloaca.WorkflowBuilder(workflow_name):
                declare({"never_registered": []})
                raise RuntimeError("abandoned")
        with pytest.raises(ValueError) as error:
            runner.execute(workflow_name)
        assert_message_names(error, workflow_name)

    def test_a_block_with_an_invalid_workflow_registers_nothing(self, workflow_name, runner):
        with pytest.raises(ValueError):
            with cloaca.WorkflowBuilder(workflow_name):
                declare({"needy": ["ghost_task"]})
        with pytest.raises(ValueError) as error:
            runner.execute(workflow_name)
        assert_message_names(error, workflow_name)


# --------------------------------------------------------------------------- Workflow

BASE = {"extract": [], "transform": ["extract"], "load": ["transform"]}
BASE_DEFINITION = {"tasks": BASE, "description": "nightly load", "tags": {"team": "data"}}

VERSION_CHANGES = [
    ("task-added", {"tasks": {**BASE, "audit": ["extract"]}}),
    ("task-removed", {"tasks": {"extract": [], "transform": ["extract"]}}),
    ("task-renamed", {"tasks": {"extract": [], "transform": ["extract"], "store": ["transform"]}}),
    ("dependency-changed", {"tasks": {**BASE, "load": ["extract"]}}),
    ("dependency-added", {"tasks": {**BASE, "load": ["transform", "extract"]}}),
    ("dependency-removed", {"tasks": {**BASE, "load": []}}),
    ("description-changed", {"description": "hourly load"}),
    ("description-removed", {"description": None}),
    ("tag-value-changed", {"tags": {"team": "finance"}}),
    ("tag-added", {"tags": {"team": "data", "tier": "gold"}}),
    ("tag-removed", {"tags": {}}),
    ("retry-changed", {"task_options": {"load": {"retry_attempts": 3}}}),
    ("backoff-changed", {"task_options": {"load": {"retry_backoff": "fixed"}}}),
    ("timeout-changed", {"task_options": {"load": {"timeout_seconds": 10}}}),
]


class TestWorkflow:
    def test_name_and_repr(self, workflow_name):
        workflow = build(workflow_name, {"only": []})
        assert workflow.name == workflow_name
        assert "Workflow" in repr(workflow)
        assert workflow_name in repr(workflow)

    def test_version_is_a_sha256_hex_digest(self, workflow_name):
        version = build(workflow_name, **BASE_DEFINITION).version
        assert re.fullmatch(r"[0-9a-f]{64}", version), version

    def test_version_is_stable_for_identical_definitions(self, workflow_name):
        first = build(workflow_name, **BASE_DEFINITION)
        second = build(workflow_name, **BASE_DEFINITION)
        assert first.version == second.version

    def test_version_ignores_declaration_order(self, workflow_name):
        reordered = dict(reversed(list(BASE.items())))
        first = build(workflow_name, **BASE_DEFINITION)
        second = build(workflow_name, **{**BASE_DEFINITION, "tasks": reordered})
        assert first.version == second.version

    @pytest.mark.parametrize("change", [c for _, c in VERSION_CHANGES], ids=[i for i, _ in VERSION_CHANGES])
    def test_version_changes_with_the_definition(self, workflow_name, change):
        # Same workflow name on both sides: only the change may move the version.
        base = build(workflow_name, **BASE_DEFINITION)
        changed = build(workflow_name, **{**BASE_DEFINITION, **change})
        assert base.version != changed.version

    def test_diamond(self, workflow_name):
        workflow = build(workflow_name, DIAMOND)
        assert workflow.topological_sort() == ["start", "alpha", "zeta", "end"]
        assert sorted_levels(workflow.get_execution_levels()) == [["start"], ["alpha", "zeta"], ["end"]]
        assert workflow.get_roots() == ["start"]
        assert workflow.get_leaves() == ["end"]

    def test_wide_dag(self, workflow_name):
        workflow = build(workflow_name, WIDE)
        order = workflow.topological_sort()
        assert_topological(order, WIDE)
        # Kahn's algorithm, always taking the alphabetically first ready task.
        assert order == [
            "fetch_orders",
            "audit",
            "clean_orders",
            "fetch_users",
            "clean_users",
            "join",
            "load_config",
            "report",
            "notify",
        ]
        assert sorted_levels(workflow.get_execution_levels()) == [
            ["fetch_orders", "fetch_users", "load_config"],
            ["audit", "clean_orders", "clean_users"],
            ["join"],
            ["report"],
            ["notify"],
        ]
        assert sorted(workflow.get_roots()) == ["fetch_orders", "fetch_users", "load_config"]
        assert sorted(workflow.get_leaves()) == ["audit", "notify"]

    def test_order_does_not_depend_on_declaration_order(self, workflow_name):
        forward = build(workflow_name, WIDE)
        backward = build(workflow_name, dict(reversed(list(WIDE.items()))))
        assert forward.topological_sort() == backward.topological_sort()
        assert sorted_levels(forward.get_execution_levels()) == sorted_levels(backward.get_execution_levels())
        assert forward.version == backward.version

    def test_independent_tasks(self, workflow_name):
        workflow = build(workflow_name, {"charlie": [], "alpha": [], "bravo": []})
        assert workflow.topological_sort() == ["alpha", "bravo", "charlie"]
        assert sorted_levels(workflow.get_execution_levels()) == [["alpha", "bravo", "charlie"]]
        assert sorted(workflow.get_roots()) == sorted(workflow.get_leaves()) == ["alpha", "bravo", "charlie"]

    def test_single_task(self, workflow_name):
        workflow = build(workflow_name, {"only": []})
        assert workflow.topological_sort() == ["only"]
        assert workflow.get_execution_levels() == [["only"]]
        assert workflow.get_roots() == workflow.get_leaves() == ["only"]

    @pytest.mark.parametrize("tasks", [{"only": []}, DIAMOND, WIDE], ids=["single", "diamond", "wide"])
    def test_validate_accepts_a_built_workflow(self, workflow_name, tasks):
        assert build(workflow_name, tasks).validate() is None


# --------------------------------------------------------------------------- register_workflow_constructor


class TestRegisterWorkflowConstructor:
    def test_registers_the_workflow_it_returns(self, workflow_name, runner):
        # The block registers both tasks; the constructor then replaces that
        # registration with a workflow made of `first` only.
        with cloaca.WorkflowBuilder(workflow_name):
            declare({"first": [], "second": []})
        calls = []

        def constructor():
            calls.append(1)
            builder = cloaca.WorkflowBuilder(workflow_name)
            builder.add_task("first")
            return builder.build()

        cloaca.register_workflow_constructor(workflow_name, constructor)
        assert calls == [1], "the constructor is called right away"

        result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert result.final_context.get("first_ran") is True
        assert "second_ran" not in result.final_context

    def test_registers_a_workflow_built_in_a_block(self, workflow_name, runner):
        workflow = build(workflow_name, {"only": []})
        cloaca.register_workflow_constructor(workflow_name, lambda: workflow)
        result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        assert result.final_context.get("only_ran") is True

    @pytest.mark.parametrize("returned", [None, "a workflow", 42, {"name": "x"}], ids=["None", "str", "int", "dict"])
    def test_constructor_returning_something_else_is_a_type_error(self, workflow_name, returned):
        with pytest.raises(TypeError):
            cloaca.register_workflow_constructor(workflow_name, lambda: returned)

    def test_constructor_returning_a_builder_is_a_type_error(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            declare({"only": []})

        def constructor():
            builder = cloaca.WorkflowBuilder(workflow_name)
            builder.add_task("only")
            return builder  # forgot .build()

        with pytest.raises(TypeError):
            cloaca.register_workflow_constructor(workflow_name, constructor)

    def test_name_mismatch_is_a_value_error_naming_both(self, workflow_name):
        # Neither name contains the other, so each must be named on its own.
        built_name, asked_name = f"{workflow_name}_built", f"{workflow_name}_asked"
        workflow = build(built_name, {"only": []})
        with pytest.raises(ValueError) as error:
            cloaca.register_workflow_constructor(asked_name, lambda: workflow)
        assert_message_names(error, built_name, asked_name)

    def test_name_mismatch_registers_nothing(self, workflow_name, runner):
        built_name, asked_name = f"{workflow_name}_built", f"{workflow_name}_asked"
        workflow = build(built_name, {"only": []})
        with pytest.raises(ValueError):
            cloaca.register_workflow_constructor(asked_name, lambda: workflow)
        with pytest.raises(ValueError) as error:
            runner.execute(asked_name)
        assert_message_names(error, asked_name)
