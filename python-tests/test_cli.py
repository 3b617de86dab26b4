"""The `cloaca` command line, run for real: as a subprocess, on a real database of each backend.

Executions and schedules are made by a runner in the test process (the CLI
process registers no workflow and runs nothing); the CLI then lists, shows and
changes them, and its effects are checked through the API. Every command runs
both as `python -m cloaca` and as the `cloaca` script of this virtualenv where
the way it is started could matter (help, errors, a listing).

A backend without a method a command needs is simulated with a runner shim
(WITHOUT_METHOD), so that error stays tested now that every method exists.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest

import cloaca

WAIT = 60  # seconds: generous bound for waits that should end almost at once
SCRIPT = Path(sys.executable).with_name("cloaca")

#: Every group and command, each with `--help`.
COMMANDS = [
    [],
    ["executions"],
    ["executions", "list"],
    ["executions", "show"],
    ["executions", "cancel"],
    ["executions", "pause"],
    ["executions", "resume"],
    ["executions", "retry"],
    ["executions", "graph"],
    ["schedules"],
    ["schedules", "list"],
    ["schedules", "enable"],
    ["schedules", "disable"],
    ["schedules", "delete"],
    ["workflows"],
    ["workflows", "graph"],
    ["db"],
    ["db", "info"],
]


def cli_env(**extra):
    """This process's environment without a database for the CLI, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "CLOACA_DATABASE_URL"}
    env.update(extra)
    return env


def run_cli(*args, script=False, env=None, cwd=None):
    """Run the CLI (`python -m cloaca`, or the installed script) with `args`; its CompletedProcess."""
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "cloaca"]
    return subprocess.run(
        [*command, *map(str, args)],
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        cwd=cwd,
        timeout=WAIT,
    )


def ok(done):
    """The stdout of a command that must have succeeded, with nothing on stderr."""
    assert done.returncode == 0, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stderr == "", done.stderr
    return done.stdout


def ok_json(done):
    """The parsed JSON stdout of a command that must have succeeded."""
    return json.loads(ok(done))


def error_line(done, status):
    """The one error line of a command that must have failed with `status` and printed nothing else."""
    assert done.returncode == status, f"exit {done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    assert done.stdout == "", done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{done.stderr}"
    assert lines[0].startswith("cloaca: error: "), lines[0]
    return lines[0]


@pytest.fixture
def db(fresh_database_url):
    """A new database and a runner open on it in the test process: (url, runner)."""
    with cloaca.DefaultRunner(fresh_database_url) as runner:
        yield fresh_database_url, runner


@pytest.fixture
def cli(db):
    """run_cli against the test's database, given with --database."""
    url, _ = db

    def run(*args, **kwargs):
        return run_cli("--database", url, *args, **kwargs)

    return run


def declare_chain(name, fail=lambda: False, gate=None):
    """Register `name`: extract -> transform -> load; load raises while `fail()`; extract waits for `gate`."""
    with cloaca.WorkflowBuilder(name) as builder:
        builder.description("three steps")

        @cloaca.task(id="extract")
        def extract(ctx):
            if gate is not None:
                assert gate.wait(WAIT), "the test never opened the gate"
            ctx.set("rows", 3)
            return ctx

        @cloaca.task(id="transform", dependencies=["extract"])
        def transform(ctx):
            return ctx

        @cloaca.task(id="load", dependencies=["transform"])
        def load(ctx):
            if fail():
                raise RuntimeError("the warehouse refused the rows")
            return ctx


def wait_for_status(runner, execution_id, wanted, wait_until):
    """Poll the API until the execution is in one of the statuses `wanted`."""
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    wait_until(lambda: runner.get_execution(execution_id).status in wanted, WAIT, f"{execution_id} in {wanted}")


def running_execution(runner, workflow_name, wait_until):
    """An execution of a gated chain whose first task is running: (execution id, gate)."""
    gate = threading.Event()
    declare_chain(workflow_name, gate=gate)
    handle = runner.execute_async(workflow_name, {})
    wait_for_status(runner, handle.execution_id, "Running", wait_until)
    return handle.execution_id, gate


# ---------------------------------------------------------------------------
# Help, and starting the command
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cloaca")
def test_every_group_and_command_has_help(command):
    out = ok(run_cli(*command, "--help"))
    assert out.startswith(f"usage: {' '.join(['cloaca', *command])}"), out


def test_the_script_and_python_m_are_the_same_command():
    assert ok(run_cli("--help", script=True)) == ok(run_cli("--help"))
    version = ok(run_cli("--version", script=True))
    assert version == f"cloaca {cloaca.__version__} ({cloaca.get_backend()} backend)\n"


def test_import_cloaca_does_not_load_the_command_line(run_python):
    done = run_python(
        "import sys, cloaca; print(sorted(m for m in sys.modules if m.startswith('cloaca.cli') or m == 'argparse'))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "script"])
def test_no_database_is_a_usage_error_naming_both_ways(script):
    line = error_line(run_cli("executions", "list", script=script), 2)
    assert "--database" in line and "CLOACA_DATABASE_URL" in line, line


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "missing command"),
        (["executions"], "missing command: choose one of list, show, cancel, pause, resume, retry"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["executions", "list", "--status", "Bogus"], "unknown status 'Bogus'"),
        (["executions", "list", "--limit", "0"], "0 is below 1"),
        (["executions", "list", "--limit", "many"], "'many' is not a whole number"),
        (["executions", "show"], "required: ID"),
        (["executions", "list", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["workflows", "graph", "flows:etl", "--format", "png"], "invalid choice: 'png'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args, fragment):
    # The database is set, so each error is about the arguments themselves.
    for script in (False, True):
        line = error_line(run_cli(*args, script=script, env=cli_env(CLOACA_DATABASE_URL="sqlite:///nowhere.db")), 2)
        assert fragment in line, line
        assert "--help" in line, "a usage error points at the help"


def test_a_url_for_no_backend_is_a_usage_error():
    line = error_line(run_cli("--database", "mysql://db/app", "executions", "list"), 2)
    assert "mysql" in line, line


@pytest.mark.usefixtures("postgres_only")
def test_a_sqlite_url_on_the_postgres_backend_is_a_usage_error_naming_the_backend(tmp_path):
    line = error_line(run_cli("--database", f"sqlite:///{tmp_path}/missing.db", "executions", "list"), 2)
    assert "postgres backend is installed" in line, line


@pytest.mark.usefixtures("sqlite_only")
def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path):
    path = tmp_path / "typo.db"
    line = error_line(run_cli("--database", f"sqlite:///{path}", "executions", "list"), 1)
    assert str(path) in line, line
    assert not path.exists()


# ---------------------------------------------------------------------------
# executions list
# ---------------------------------------------------------------------------


@pytest.fixture
def two_executions(db, workflow_name):
    """One Completed and (later) one Failed execution of `workflow_name`: (completed, failed) results."""
    _, runner = db
    failing = {"now": False}
    declare_chain(workflow_name, fail=lambda: failing["now"])
    completed = runner.execute(workflow_name, {})
    failing["now"] = True
    failed = runner.execute(workflow_name, {})
    assert (completed.status, failed.status) == ("Completed", "Failed")
    return completed, failed


LIST_KEYS = ["execution_id", "workflow_name", "status", "start_time", "end_time", "error_message"]


def test_list_json_has_every_execution_newest_first_with_stable_keys(cli, two_executions):
    completed, failed = two_executions
    listed = ok_json(cli("executions", "list", "--json"))
    assert [e["execution_id"] for e in listed] == [failed.execution_id, completed.execution_id]
    assert all(list(e) == LIST_KEYS for e in listed), listed
    assert listed[0]["status"] == "Failed"
    assert listed[0]["error_message"] == failed.error_message
    assert listed[1] == {
        "execution_id": completed.execution_id,
        "workflow_name": completed.workflow_name,
        "status": "Completed",
        "start_time": completed.start_time,
        "end_time": completed.end_time,
        "error_message": None,
    }


def test_json_is_accepted_before_the_command_too(cli, two_executions):
    assert ok_json(cli("--json", "executions", "list")) == ok_json(cli("executions", "list", "--json"))


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "script"])
def test_list_table_has_a_header_and_one_aligned_row_each(cli, two_executions, workflow_name, script):
    completed, failed = two_executions
    lines = ok(cli("executions", "list", script=script)).splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATUS", "STARTED", "FINISHED", "ERROR"]
    assert len(lines) == 3, lines
    assert lines[1].startswith(failed.execution_id) and lines[2].startswith(completed.execution_id)
    status_column = lines[0].index("STATUS")
    assert lines[1][status_column:].startswith("Failed")
    assert lines[2][status_column:].startswith("Completed")
    assert "RuntimeError: the warehouse refused the rows" in lines[1], "the error's first line is shown"
    assert lines[2].rstrip().endswith("-"), "no error shows as -"
    assert lines[1].count(workflow_name) == 1


def test_list_filters_by_workflow_status_and_limit(cli, db, two_executions, workflow_name):
    completed, failed = two_executions
    _, runner = db
    other = f"{workflow_name}_other"
    declare_chain(other)
    elsewhere = runner.execute(other, {})

    def ids(*args):
        return [e["execution_id"] for e in ok_json(cli("executions", "list", "--json", *args))]

    assert ids() == [elsewhere.execution_id, failed.execution_id, completed.execution_id]
    assert ids("--workflow", workflow_name) == [failed.execution_id, completed.execution_id]
    assert ids("--status", "Completed") == [elsewhere.execution_id, completed.execution_id]
    assert ids("--status", "failed") == [failed.execution_id], "a status in any letter case"
    assert ids("--workflow", other, "--status", "Failed") == []
    assert ids("--limit", "1") == [elsewhere.execution_id]
    assert ok(cli("executions", "list", "--workflow", "no_such_workflow")) == "no executions\n"


def test_list_reads_the_database_from_the_environment(db, two_executions):
    url, _ = db
    listed = ok_json(run_cli("executions", "list", "--json", env=cli_env(CLOACA_DATABASE_URL=url)))
    assert len(listed) == 2


def test_list_accepts_the_paused_and_cancelled_statuses(cli, db, workflow_name, wait_until):
    _, runner = db
    execution_id, gate = running_execution(runner, workflow_name, wait_until)
    ok(cli("executions", "cancel", execution_id))
    gate.set()
    wait_for_status(runner, execution_id, "Cancelled", wait_until)
    assert [e["execution_id"] for e in ok_json(cli("executions", "list", "--json", "--status", "Cancelled"))] == [
        execution_id
    ]
    assert ok_json(cli("executions", "list", "--json", "--status", "Paused")) == []


# ---------------------------------------------------------------------------
# executions show
# ---------------------------------------------------------------------------


def test_show_of_an_unknown_id_is_one_line_exit_1(cli):
    missing = str(uuid.uuid4())
    line = error_line(cli("executions", "show", missing), 1)
    assert missing in line, line


def test_show_json_has_the_execution_its_tasks_and_events(cli, two_executions):
    _, failed = two_executions
    shown = ok_json(cli("executions", "show", failed.execution_id, "--json"))
    assert list(shown) == ["execution", "tasks", "events"]
    assert shown["execution"] == {
        "execution_id": failed.execution_id,
        "workflow_name": failed.workflow_name,
        "status": "Failed",
        "start_time": failed.start_time,
        "end_time": failed.end_time,
        "error_message": failed.error_message,
        "context": failed.final_context.to_dict(),
    }
    tasks = {t["task_id"]: t for t in shown["tasks"]}
    assert {k: t["status"] for k, t in tasks.items()} == {
        "extract": "Completed",
        "transform": "Completed",
        "load": "Failed",
    }
    assert tasks["load"]["attempts"] == 1
    assert "the warehouse refused the rows" in tasks["load"]["error_message"]
    kinds = [e["kind"] for e in shown["events"]]
    assert kinds[0] == "execution_created" and kinds[-1] == "execution_finished", kinds
    assert "attempt_failed" in kinds, kinds


def test_show_table_has_the_fields_the_task_table_and_the_events(cli, two_executions):
    _, failed = two_executions
    out = ok(cli("executions", "show", failed.execution_id))
    head, tasks, events, *rest = out.split("\n\n")
    fields = dict(line.split(None, 1) for line in head.splitlines())
    assert fields["execution"] == failed.execution_id
    assert fields["workflow"] == failed.workflow_name
    assert fields["status"] == "Failed"
    assert fields["started"] == failed.start_time
    assert fields["error"].startswith("Task 'load' failed")
    task_lines = tasks.splitlines()
    assert task_lines[0] == "TASKS"
    assert task_lines[1].split()[:3] == ["TASK", "STATUS", "ATTEMPTS"]
    assert sorted(line.split()[:2] for line in task_lines[2:]) == [
        ["extract", "Completed"],
        ["load", "Failed"],
        ["transform", "Completed"],
    ]
    event_lines = events.splitlines()
    assert event_lines[0] == "EVENTS"
    assert event_lines[1].split()[:2] == ["TIME", "EVENT"]
    assert "execution_created" in event_lines[2]
    assert rest and "Traceback" in rest[0], "the whole error message ends the page"


def test_show_table_gives_a_skipped_task_its_reason(cli, db, workflow_name):
    _, runner = db
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="pull")
        def pull(ctx):
            raise RuntimeError("down")

        @cloaca.task(id="after", dependencies=["pull"])
        def after(ctx):
            return ctx

        @cloaca.task(id="fallback", dependencies=["pull"], trigger_rules=cloaca.task_success("pull"))
        def fallback(ctx):
            return ctx

    failed = runner.execute(workflow_name, {})
    tasks = ok(cli("executions", "show", failed.execution_id)).split("\n\n")[1].splitlines()[2:]
    assert sorted(line.split()[:3] for line in tasks) == [
        ["after", "Skipped", "(upstream_failed)"],
        ["fallback", "Skipped", "(trigger_rule)"],
        ["pull", "Failed", "1"],
    ]
    shown = ok_json(cli("executions", "show", failed.execution_id, "--json"))
    assert {t["task_id"]: t["skip_reason"] for t in shown["tasks"]} == {
        "pull": None,
        "after": "upstream_failed",
        "fallback": "trigger_rule",
    }


# ---------------------------------------------------------------------------
# executions cancel, pause, resume, retry
# ---------------------------------------------------------------------------


def test_cancel_stops_an_execution_and_a_second_cancel_is_refused(cli, db, workflow_name, wait_until):
    _, runner = db
    execution_id, gate = running_execution(runner, workflow_name, wait_until)
    assert ok(cli("executions", "cancel", execution_id)).startswith(f"cancelled execution {execution_id}")
    gate.set()
    wait_for_status(runner, execution_id, "Cancelled", wait_until)

    line = error_line(cli("executions", "cancel", execution_id), 1)
    assert execution_id in line and "Cancelled" in line, line


def test_cancelling_a_finished_execution_is_refused(cli, two_executions):
    completed, _ = two_executions
    line = error_line(cli("executions", "cancel", completed.execution_id), 1)
    assert completed.execution_id in line and "Completed" in line, line


def test_pause_holds_an_execution_and_resume_finishes_it(cli, db, workflow_name, wait_until):
    _, runner = db
    execution_id, gate = running_execution(runner, workflow_name, wait_until)
    paused = ok_json(cli("executions", "pause", execution_id, "--json"))
    assert paused["execution_id"] == execution_id and paused["action"] == "pause"
    gate.set()
    wait_for_status(runner, execution_id, "Paused", wait_until)

    assert ok(cli("executions", "resume", execution_id)).startswith(f"resumed execution {execution_id}")
    wait_for_status(runner, execution_id, "Completed", wait_until)


def test_retry_runs_a_failed_execution_again(cli, db, workflow_name, wait_until):
    _, runner = db
    failing = {"now": True}
    declare_chain(workflow_name, fail=lambda: failing["now"])
    failed = runner.execute(workflow_name, {})
    assert failed.status == "Failed"
    failing["now"] = False

    retried = ok_json(cli("executions", "retry", failed.execution_id, "--json"))
    assert list(retried) == ["execution_id", "action", "status"]
    assert retried["execution_id"] == failed.execution_id and retried["action"] == "retry"
    assert retried["status"] != "Failed"
    wait_for_status(runner, failed.execution_id, "Completed", wait_until)
    assert [t.status for t in runner.get_execution_tasks(failed.execution_id)] == ["Completed"] * 3


def test_graph_of_an_execution_paints_its_tasks(cli, db, two_executions):
    _, runner = db
    _, failed = two_executions
    text = ok(cli("executions", "graph", failed.execution_id))
    assert text.rstrip("\n") == runner.render_execution(failed.execution_id).rstrip("\n")
    assert "Failed" in text and "Completed" in text
    dot = ok_json(cli("--json", "executions", "graph", failed.execution_id, "--format", "dot"))
    assert dot == {
        "execution_id": failed.execution_id,
        "format": "dot",
        "graph": runner.render_execution(failed.execution_id, "dot"),
    }
    error_line(cli("executions", "graph", failed.execution_id, "--format", "svg"), 2)
    missing = str(uuid.uuid4())
    assert missing in error_line(cli("executions", "graph", missing), 1)


@pytest.mark.parametrize("action", ["cancel", "pause", "resume", "retry"])
def test_control_of_an_unknown_id_is_one_line_exit_1(cli, action):
    missing = str(uuid.uuid4())
    line = error_line(cli("executions", action, missing), 1)
    assert missing in line, line


# A CLI process whose runner lacks one method, as on a backend older than the command.
WITHOUT_METHOD = """
import sys
import cloaca
from cloaca.cli import main

real = cloaca.DefaultRunner
missing = sys.argv[1]

class Without:
    def __init__(self, runner):
        self._runner = runner

    def __getattr__(self, name):
        if name == missing:
            raise AttributeError(name)
        return getattr(self._runner, name)

class Runner:
    @staticmethod
    def with_config(url, config):
        return Without(real.with_config(url, config))

cloaca.DefaultRunner = Runner
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("method", "command"),
    [
        ("get_execution_tasks", ["executions", "show"]),
        ("cancel_execution", ["executions", "cancel"]),
        ("retry_execution", ["executions", "retry"]),
        ("get_database_info", ["db", "info"]),
    ],
)
def test_a_method_missing_from_the_backend_is_one_line_naming_it(db, two_executions, method, command):
    url, _ = db
    completed, _ = two_executions
    args = [*command, completed.execution_id] if command[0] == "executions" else command
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_METHOD, method, "--database", url, *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=WAIT,
    )
    line = error_line(done, 1)
    assert f"DefaultRunner.{method}()" in line and "upgrade cloaca" in line, line


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------


@pytest.fixture
def schedule(db, workflow_name):
    """The id of a daily schedule of a registered workflow."""
    _, runner = db
    declare_chain(workflow_name)
    return runner.register_cron_workflow(workflow_name, "0 3 * * *", "Europe/Berlin")


def test_schedules_list_table_and_json(cli, db, schedule, workflow_name):
    _, runner = db
    listed = ok_json(cli("schedules", "list", "--json"))
    assert listed == runner.list_cron_schedules()
    assert [s["id"] for s in listed] == [schedule]
    lines = ok(cli("schedules", "list")).splitlines()
    assert lines[0].split()[:5] == ["ID", "WORKFLOW", "EXPRESSION", "TIMEZONE", "ENABLED"]
    assert lines[1].split()[:2] == [schedule, workflow_name]
    assert "0 3 * * *" in lines[1] and "Europe/Berlin" in lines[1] and " yes " in lines[1]


def test_schedules_list_of_none(cli):
    assert ok(cli("schedules", "list")) == "no schedules\n"
    assert ok_json(cli("schedules", "list", "--json")) == []


def test_schedules_disable_enable_delete(cli, db, schedule):
    _, runner = db
    assert ok(cli("schedules", "disable", schedule)) == f"disabled schedule {schedule}\n"
    assert runner.get_cron_schedule(schedule)["enabled"] is False

    enabled = ok_json(cli("schedules", "enable", schedule, "--json"))
    assert runner.get_cron_schedule(schedule)["enabled"] is True
    assert enabled == {
        "schedule_id": schedule,
        "action": "enable",
        "enabled": True,
        "next_run_at": runner.get_cron_schedule(schedule)["next_run_at"],
    }

    assert ok(cli("schedules", "delete", schedule)) == f"deleted schedule {schedule}\n"
    assert runner.list_cron_schedules() == []


@pytest.mark.parametrize("action", ["enable", "disable", "delete"])
def test_schedule_commands_on_an_unknown_id_are_one_line_exit_1(cli, action):
    missing = str(uuid.uuid4())
    line = error_line(cli("schedules", action, missing), 1)
    assert missing in line, line


# ---------------------------------------------------------------------------
# workflows graph
# ---------------------------------------------------------------------------

FLOWS = """
import cloaca

with cloaca.WorkflowBuilder({name!r}) as builder:

    @cloaca.task(id="extract")
    def extract(ctx):
        return ctx

    @cloaca.task(id="transform_a", dependencies=["extract"])
    def transform_a(ctx):
        return ctx

    @cloaca.task(id="transform_b", dependencies=["extract"])
    def transform_b(ctx):
        return ctx

    @cloaca.task(id="load", dependencies=["transform_a", "transform_b"])
    def load(ctx):
        return ctx

workflow = builder.build()


def make_workflow():
    return builder.build()


def broken():
    raise RuntimeError("no graph today")


def not_a_workflow():
    return 42


number = 7
"""


@pytest.fixture
def flows_module(tmp_path, workflow_name):
    """A module `flows_<unique>` in tmp_path (the CLI's working directory) declaring a diamond."""
    module = f"flows_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(FLOWS.format(name=workflow_name)))
    return module


def graph(module_attr, fmt, tmp_path, *extra, script=False):
    """`cloaca workflows graph` run in tmp_path with no database configured."""
    return run_cli("workflows", "graph", module_attr, "--format", fmt, *extra, cwd=tmp_path, script=script)


def expected_graph(tmp_path, module, fmt):
    """What the workflow's own to_mermaid()/to_dot() return, computed in a fresh interpreter."""
    code = f"import {module}; print({module}.workflow.to_{'mermaid' if fmt == 'mermaid' else 'dot'}(), end='')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=WAIT)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", [False, True], ids=["python-m", "script"])
@pytest.mark.parametrize("attr", ["workflow", "make_workflow", "builder"])
def test_graph_mermaid_prints_the_workflows_own_text(tmp_path, flows_module, attr, script):
    out = ok(graph(f"{flows_module}:{attr}", "mermaid", tmp_path, script=script))
    assert out == expected_graph(tmp_path, flows_module, "mermaid").rstrip("\n") + "\n"
    assert "extract" in out and "load" in out


def test_graph_dot_prints_the_workflows_own_text(tmp_path, flows_module, workflow_name):
    out = ok(graph(f"{flows_module}:workflow", "dot", tmp_path))
    assert out == expected_graph(tmp_path, flows_module, "dot").rstrip("\n") + "\n"
    as_json = ok_json(graph(f"{flows_module}:workflow", "dot", tmp_path, "--json"))
    assert as_json == {
        "workflow": workflow_name,
        "format": "dot",
        "graph": expected_graph(tmp_path, flows_module, "dot"),
    }


@pytest.mark.parametrize(
    ("spec", "status", "fragment"),
    [
        ("{module}", 2, "is not MODULE:NAME"),
        ("{module}:", 2, "is not MODULE:NAME"),
        (":workflow", 2, "is not MODULE:NAME"),
        ("no_such_module_here:workflow", 1, "no module named 'no_such_module_here'"),
        ("{module}:nothing", 1, "has no attribute 'nothing'"),
        ("{module}:number", 1, "is of type int, not a cloaca.Workflow"),
        ("{module}:not_a_workflow", 1, "returned a value of type int, not a cloaca.Workflow"),
        ("{module}:broken", 1, "RuntimeError: no graph today"),
    ],
)
def test_a_bad_module_name_is_one_line(tmp_path, flows_module, spec, status, fragment):
    line = error_line(graph(spec.format(module=flows_module), "mermaid", tmp_path), status)
    assert fragment in line, line


def test_a_module_that_fails_to_import_is_one_line(tmp_path):
    (tmp_path / "bad_flows.py").write_text("import cloaca\nraise ImportError('a dependency is missing')\n")
    line = error_line(graph("bad_flows:workflow", "mermaid", tmp_path), 1)
    assert "importing bad_flows failed: ImportError: a dependency is missing" in line, line


# ---------------------------------------------------------------------------
# db info
# ---------------------------------------------------------------------------


def test_db_info_json_and_table(cli, db, backend, two_executions, workflow_name):
    url, runner = db
    runner.register_cron_workflow(workflow_name, "0 3 * * *")
    info = ok_json(cli("db", "info", "--json"))
    assert info["cloaca_version"] == cloaca.__version__
    assert info["backend"] == backend
    assert isinstance(info["schema_version"], int) and info["schema_version"] >= 1
    counts = {status: n for status, n in info["executions"].items() if n}
    assert counts == {"Completed": 1, "Failed": 1}
    assert info["task_executions"] == 6
    assert info["cron_schedules"] == 1
    password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2] if "@" in url else ""
    if password:
        assert password not in info["database"], "the password is redacted"

    fields = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in ok(cli("db", "info")).splitlines())
    assert fields["backend"] == backend
    assert fields["schema version"] == str(info["schema_version"])
    assert fields["executions"] == "2"
    assert fields["Completed"] == "1" and fields["Failed"] == "1"
    assert fields["task executions"] == "6"
    assert fields["cron schedules"] == "1"
