"""Workflow instances (register_workflow_instance), for real, on both backends.

An instance is a cron schedule with a unique name per workflow and a params
snapshot that starts every tick's input. Ticks fire for real (6-field
expressions, a 0.2 s cron poll) and each tick's execution input is read straight
from the database (db_query), so what the engine stored is what is checked.
Uniqueness is checked across processes, and recovery of a lost tick with a
runner process SIGKILLed mid-task (the crash machinery of test_cron.py).
"""

import json
import os
import subprocess
import sys
import uuid

import pytest
from test_cron import (
    FINAL,
    SCENARIOS,
    WAIT,
    assert_schedule,
    crash_a_tick,
    define,
    find_row,
    history,
    instant,
    quiet_runner,
    recovery_config,
    runner_on,
    settle,
    ticking_runner,
)

import cloaca

PREFIX = "Failed to register workflow instance: "
RESERVED = [
    "cron_schedule_id",
    "cron_scheduled_time",
    "scheduled_time",
    "schedule_id",
    "schedule_timezone",
    "schedule_expression",
    "trigger_name",
    "triggered_at",
]
PARAMS = {"region": "eu", "batch": 3, "limits": {"rows": 500, "tables": ["a", "b"]}, "dry_run": False, "note": None}


def stored_input(db_query, url, execution_id):
    """The input context stored for an execution, read from its row."""
    rows = db_query(url, f"SELECT input_context FROM cloaca_executions WHERE id = '{execution_id}'")
    assert len(rows) == 1, rows
    return json.loads(rows[0][0])


def tick_keys(schedule_id, scheduled_time, timezone, expression):
    return {
        "cron_schedule_id": schedule_id,
        "cron_scheduled_time": scheduled_time,
        "scheduled_time": scheduled_time,
        "schedule_id": schedule_id,
        "schedule_timezone": timezone,
        "schedule_expression": expression,
    }


# =========================================================================== ticks


@pytest.mark.parametrize("kind", ["dict", "context", "anonymous"])
def test_each_tick_starts_from_the_params_then_every_tick_key(
    kind, tmp_path, fresh_database_url, workflow_name, wait_until, db_query
):
    define(workflow_name, tmp_path / "side.txt")
    expression, zone = "* * * * * *", "Europe/Berlin"
    with ticking_runner(fresh_database_url) as runner:
        if kind == "anonymous":
            schedule_id = runner.register_cron_workflow(workflow_name, expression, zone)
            params = {}
        else:
            params = PARAMS
            given = dict(PARAMS) if kind == "dict" else cloaca.Context(PARAMS)
            schedule_id = runner.register_workflow_instance(workflow_name, "eu_nightly", expression, zone, given)
        assert str(uuid.UUID(schedule_id)) == schedule_id
        wait_until(
            lambda: sum(r["status"] == "Completed" for r in history(runner, schedule_id)) >= 2,
            WAIT,
            "two ticks to complete",
        )
        rows = settle(runner, schedule_id, wait_until)
        results = {row["execution_id"]: runner.get_execution(row["execution_id"]) for row in rows}
    finals = {execution_id: result.final_context.to_dict() for execution_id, result in results.items()}

    for row in rows:
        assert row["status"] == "Completed", row
        expected = {**params, **tick_keys(schedule_id, row["scheduled_time"], zone, expression)}
        got = stored_input(db_query, fresh_database_url, row["execution_id"])
        assert got == expected
        assert instant(got["scheduled_time"]).microsecond == 0
        final = finals[row["execution_id"]]
        assert {k: final[k] for k in expected} == expected


def test_params_survive_a_restart_updates_and_disabling(tmp_path, fresh_database_url, workflow_name, db_query):
    define(workflow_name, tmp_path / "side.txt")
    with quiet_runner(fresh_database_url) as runner:
        schedule_id = runner.register_workflow_instance(workflow_name, "eu", "0 3 * * *", "UTC", PARAMS)
        other_id = runner.register_workflow_instance(workflow_name, "us", "0 4 * * *", "UTC", {})
        plain_id = runner.register_cron_workflow(workflow_name, "0 5 * * *")
        schedule = runner.get_cron_schedule(schedule_id)
        assert_schedule(
            schedule,
            schedule_id=schedule_id,
            workflow=workflow_name,
            expression="0 3 * * *",
            tz="UTC",
            instance="eu",
            params=PARAMS,
        )
        assert runner.get_cron_schedule(other_id)["params"] == {}
        none_id = runner.register_workflow_instance(workflow_name, "none", "0 4 * * *", "UTC", None)
        assert runner.get_cron_schedule(none_id)["params"] == {}
        assert runner.get_cron_schedule(plain_id)["instance_name"] is None
        assert runner.get_cron_schedule(plain_id)["params"] is None
        # the dict returned is a copy: changing it changes nothing stored
        schedule["params"]["region"] = "changed"
    # stored: a new runner sees them; updating and disabling keep them
    with quiet_runner(fresh_database_url) as runner:
        runner.update_cron_schedule(schedule_id, "30 6 * * *", "Asia/Tokyo")
        runner.set_cron_schedule_enabled(schedule_id, False)
        runner.set_cron_schedule_enabled(schedule_id, True)
        updated = runner.get_cron_schedule(schedule_id)
        listed = {s["id"]: s for s in runner.list_cron_schedules()}
    assert (updated["cron_expression"], updated["timezone"]) == ("30 6 * * *", "Asia/Tokyo")
    assert (updated["instance_name"], updated["params"]) == ("eu", PARAMS)
    assert listed[schedule_id] == updated
    assert (listed[other_id]["instance_name"], listed[plain_id]["instance_name"]) == ("us", None)
    (stored,) = db_query(fresh_database_url, f"SELECT params FROM cloaca_cron_schedules WHERE id = '{schedule_id}'")
    assert json.loads(stored[0]) == PARAMS


# =========================================================================== bad input


@pytest.fixture
def instances_db(fresh_database_url, workflow_name, tmp_path):
    """A runner (firing nothing) on a database holding one instance, "taken"; the
    refused calls below must leave the schedules exactly as they are."""
    define(workflow_name, tmp_path / "side.txt")
    with quiet_runner(fresh_database_url) as runner:
        taken_id = runner.register_workflow_instance(workflow_name, "taken", "0 3 * * *", "UTC", {"a": 1})
        before = runner.list_cron_schedules()
        yield runner, workflow_name, taken_id
        assert runner.list_cron_schedules() == before, "a refused call changed the schedules"


def register(runner, workflow, instance="fresh", expression="0 3 * * *", zone="UTC", params=None):
    return runner.register_workflow_instance(workflow, instance, expression, zone, {} if params is None else params)


# (arguments given to register, the values the message must name)
REFUSED = {
    "empty-name": (dict(instance=""), ['instance_name=""']),
    "blank-name": (dict(instance="   "), ['instance_name="   "']),
    "nul-in-name": (dict(instance="a\0b"), ["instance_name="]),
    "bad-expression": (dict(expression="61 * * * *"), ["61 * * * *"]),
    "bad-timezone": (dict(zone="Mars/Olympus"), ["Mars/Olympus"]),
    "secret": (dict(params={"token": {"$secret": "api_token"}}), ['"token"', "$secret"]),
    "secret-in-context": (dict(params=cloaca.Context({"token": {"$secret": "x"}})), ['"token"', "$secret"]),
    **{f"reserved-{key}": (dict(params={"ok": 1, key: "x"}), [f'"{key}"']) for key in RESERVED},
}


@pytest.mark.parametrize("arguments, named", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_instance_is_a_value_error_naming_the_value(instances_db, arguments, named):
    runner, workflow, _ = instances_db
    with pytest.raises(ValueError) as error:
        register(runner, workflow, **arguments)
    message = str(error.value)
    assert message.startswith(PREFIX), message
    for value in named:
        assert value in message, (value, message)


def test_an_unregistered_workflow_is_refused_naming_it(instances_db):
    runner, workflow, _ = instances_db
    missing = f"{workflow}_not_registered"
    with pytest.raises(cloaca.WorkflowNotFoundError) as error:
        register(runner, missing)
    assert isinstance(error.value, ValueError)
    assert str(error.value).startswith(PREFIX) and missing in str(error.value), str(error.value)


def test_a_duplicate_name_is_refused_naming_workflow_instance_and_schedule(instances_db, tmp_path):
    runner, workflow, taken_id = instances_db
    with pytest.raises(ValueError) as error:
        register(runner, workflow, instance="taken", expression="0 9 * * *")
    message = str(error.value)
    assert message.startswith(PREFIX), message
    assert all(value in message for value in (json.dumps(workflow), '"taken"', taken_id)), message
    # the same name for another workflow is another instance
    other = f"{workflow}_other"
    define(other, tmp_path / "side.txt")
    other_id = register(runner, other, instance="taken")
    assert runner.get_cron_schedule(other_id)["instance_name"] == "taken"
    runner.delete_cron_schedule(other_id)


# The ids are spelled out: repr(object()) holds an address, which differs between
# the pytest-xdist workers, and they must collect the same test ids.
@pytest.mark.parametrize(
    "params",
    [[("a", 1)], "a=1", 5, {"when": object()}, {1: "int key"}],
    ids=["[('a', 1)]", "'a=1'", "5", "{'when': <object>}", "{1: 'int key'}"],
)
def test_params_that_are_not_a_context_or_a_dict_of_json_values_are_a_type_error(instances_db, params):
    runner, workflow, _ = instances_db
    with pytest.raises(TypeError) as error:
        runner.register_workflow_instance(workflow, "fresh", "0 3 * * *", "UTC", params)
    assert "params" in str(error.value) or "context" in str(error.value), str(error.value)


def test_every_argument_is_required(instances_db):
    runner, workflow, _ = instances_db
    with pytest.raises(TypeError):
        runner.register_workflow_instance(workflow, "fresh", "0 3 * * *", "UTC")
    with pytest.raises(TypeError):
        runner.register_workflow_instance(workflow, "fresh", "0 3 * * *", params={})


# =========================================================================== across processes

_REGISTER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import cloaca, cron_worker
url, workflow, side, go = sys.argv[2:6]
cron_worker.define_workflow(workflow, side)
config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False)
with cloaca.DefaultRunner.with_config(url, config) as runner:
    open(go + ".ready." + str(os.getpid()), "w").close()
    while not os.path.exists(go):
        time.sleep(0.005)
    try:
        schedule_id = runner.register_workflow_instance(workflow, "shared", "0 3 * * *", "UTC", {"pid": os.getpid()})
        print("registered", schedule_id)
    except ValueError as error:
        print("refused", error)
"""


def test_one_name_is_one_instance_across_processes_registering_at_once(
    fresh_database_url, workflow_name, tmp_path, wait_until
):
    side, go = tmp_path / "side.txt", tmp_path / "go"
    side.touch()
    define(workflow_name, side)
    args = [str(SCENARIOS), fresh_database_url, workflow_name, str(side), str(go)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _REGISTER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    try:
        wait_until(lambda: len(list(tmp_path.glob("go.ready.*"))) == 3, 120, "three processes to open their runners")
        go.touch()
        outputs = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(proc.returncode == 0 for proc in procs), outputs
    lines = [out.strip() for out, _ in outputs]
    registered = [line.split()[1] for line in lines if line.startswith("registered")]
    refused = [line for line in lines if line.startswith("refused")]
    assert len(registered) == 1 and len(refused) == 2, lines
    assert all(PREFIX in line and '"shared"' in line and registered[0] in line for line in refused), refused
    with quiet_runner(fresh_database_url) as runner:
        schedules = runner.list_cron_schedules()
        # and this process, a fourth runner, is refused too
        with pytest.raises(ValueError, match="already has an instance"):
            register(runner, workflow_name, instance="shared")
    assert [(s["id"], s["instance_name"]) for s in schedules] == [(registered[0], "shared")]
    assert set(schedules[0]["params"]) == {"pid"} and schedules[0]["params"]["pid"] in {p.pid for p in procs}


# =========================================================================== lost ticks


def test_a_lost_instance_tick_is_started_again_with_the_same_input(
    fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until, db_query
):
    params = {"region": "eu", "limits": {"rows": 5}}
    crash = crash_a_tick(
        fresh_database_url,
        workflow_name,
        tmp_path,
        run_scenario,
        wait_until,
        "--instance",
        "eu_nightly",
        "--params",
        json.dumps(params),
    )
    crash.marker.unlink()  # the run started again does not block
    with runner_on(crash.url, **recovery_config()) as runner:
        assert runner.get_cron_schedule(crash.schedule_id)["params"] == params
        lost = wait_until(
            lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 1, "Lost"),
            WAIT,
            "the interrupted execution to be lost",
        )
        again = wait_until(
            lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 2, "Completed"),
            WAIT,
            "the tick's second attempt to complete",
        )
        final = runner.get_execution(again["execution_id"]).final_context.to_dict()
        assert all(row["status"] in FINAL for row in history(runner, crash.schedule_id))

    first_input = stored_input(db_query, crash.url, lost["execution_id"])
    second_input = stored_input(db_query, crash.url, again["execution_id"])
    assert first_input == second_input
    keys = tick_keys(crash.schedule_id, first_input["scheduled_time"], "UTC", first_input["schedule_expression"])
    assert first_input == {**params, **keys}
    assert instant(first_input["scheduled_time"]) == crash.scheduled
    assert {k: final[k] for k in params} == params
    assert final["ran_in"] == os.getpid()


def test_a_schedule_whose_params_cannot_be_read_is_left_alone_and_the_others_fire(
    tmp_path, fresh_database_url, workflow_name, wait_until, db_query
):
    """Params edited by hand into something that is not a JSON object stop only their
    own schedule: it keeps its next tick and starts nothing, while another one ticks."""
    define(workflow_name, tmp_path / "side.txt")
    with quiet_runner(fresh_database_url) as runner:
        broken_id = runner.register_workflow_instance(workflow_name, "broken", "* * * * * *", "UTC", {"a": 1})
        healthy_id = runner.register_cron_workflow(workflow_name, "* * * * * *")
    next_run_sql = f"SELECT next_run_at FROM cloaca_cron_schedules WHERE id = '{broken_id}'"
    stuck_at = db_query(fresh_database_url, next_run_sql)
    db_query(fresh_database_url, f"UPDATE cloaca_cron_schedules SET params = '[1, 2]' WHERE id = '{broken_id}'")
    with ticking_runner(fresh_database_url) as runner:
        wait_until(lambda: len(history(runner, healthy_id)) >= 2, WAIT, "the healthy schedule to tick twice")
        runner.set_cron_schedule_enabled(healthy_id, False)
        runs_sql = f"SELECT COUNT(*) FROM cloaca_cron_executions WHERE schedule_id = '{broken_id}'"
        assert db_query(fresh_database_url, runs_sql) == [("0",)], "the unreadable schedule started a tick"
        assert db_query(fresh_database_url, next_run_sql) == stuck_at, "the unreadable schedule was advanced"
        with pytest.raises(cloaca.DatabaseError, match="params"):
            runner.get_cron_schedule(broken_id)
