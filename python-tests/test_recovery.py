"""Crash recovery, for real, on both backends.

A runner process (scenarios/recovery_runner.py) starts the workflow

    a -> b -> c        d (independent)

and is SIGKILLed while b is running (b writes a marker file, then sleeps). The
database then holds an interrupted execution: a and d completed, b 'running' with
a lease that nobody renews (task_lease_seconds=2), c not started. A new runner
process that registers the same workflow (same version) must finish it, running
b again and c once, never a or d again. Runners that cannot or may not recover
it (workflow not registered, another version, enable_recovery=False) must leave
it alone.

Every task appends "<task_id> <pid>" to a side-effect file, so how often each
task really ran is counted outside the engine.
"""

import json
from collections import Counter
from types import SimpleNamespace

import pytest

import cloaca

LEASE_SECONDS = 2
EXPECTED_FINAL_CONTEXT = {"input": 1, "a": 2, "b": 20, "c": 21, "d": "d"}


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def task_states(db_query, url, execution_id):
    """{task_id: (status, attempt)} of one execution, straight from the table."""
    rows = db_query(
        url, f"SELECT task_id, status, attempt FROM cloaca_task_executions WHERE execution_id = {sql_str(execution_id)}"
    )
    return {task_id: (status, attempt) for task_id, status, attempt in rows}


def execution_state(db_query, url, execution_id):
    rows = db_query(url, f"SELECT status, finished_at FROM cloaca_executions WHERE id = {sql_str(execution_id)}")
    assert len(rows) == 1, rows
    return rows[0]


def side_effects(path):
    """[(task_id, pid)] in the order the tasks ran."""
    lines = path.read_text().splitlines()
    return [(task, int(pid)) for task, pid in (line.split() for line in lines)]


@pytest.fixture
def interrupted(fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until, db_query):
    """An execution whose runner process was SIGKILLed while task b was running."""
    side_file = tmp_path / "side-effects.txt"
    side_file.touch()
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    id_file = tmp_path / "execution-id"
    common = [
        "--url",
        fresh_database_url,
        "--workflow",
        workflow_name,
        "--side-file",
        side_file,
        "--marker-dir",
        marker_dir,
        "--lease",
        LEASE_SECONDS,
    ]

    first = run_scenario.start(
        "recovery_runner.py", *common, "--mode", "start", "--slow-b", "--result-file", id_file, "--seconds", 600
    )
    wait_until(
        lambda: id_file.exists() and (marker_dir / f"b.{first.pid}").exists(),
        120,
        "task b to start in the first runner process",
        proc=first,
    )
    execution_id = id_file.read_text().strip()

    def a_and_d_completed():
        states = task_states(db_query, fresh_database_url, execution_id)
        return states.get("a", ("",))[0] == "completed" and states.get("d", ("",))[0] == "completed"

    wait_until(a_and_d_completed, 60, "a and d to be recorded as completed", proc=first)
    first.kill()  # SIGKILL: no shutdown, no cleanup, the lease of b is left to expire
    first.wait(timeout=30)
    assert first.returncode == -9, first.output()

    return SimpleNamespace(
        url=fresh_database_url,
        workflow=workflow_name,
        execution_id=execution_id,
        side_file=side_file,
        first_pid=first.pid,
        common=common,
        tmp_path=tmp_path,
    )


def assert_still_interrupted(db_query, crash, b_states=("running",)):
    """The state the kill left: a and d done once, b started once, c never started."""
    status, finished_at = execution_state(db_query, crash.url, crash.execution_id)
    assert status in ("pending", "running"), status
    assert finished_at is None
    states = task_states(db_query, crash.url, crash.execution_id)
    assert states["a"] == ("completed", "1"), states
    assert states["d"] == ("completed", "1"), states
    assert states["b"][0] in b_states and states["b"][1] == "1", states
    assert states["c"] == ("pending", "0"), states
    ran = side_effects(crash.side_file)
    assert sorted(task for task, _ in ran) == ["a", "b", "d"], ran
    assert {pid for _, pid in ran} == {crash.first_pid}, ran


def resume(run_scenario, crash, name="resumed.json"):
    """Run a recovering runner process until the execution finishes; its JSON result."""
    result_file = crash.tmp_path / name
    done = run_scenario(
        "recovery_runner.py",
        *crash.common,
        "--mode",
        "resume",
        "--execution-id",
        crash.execution_id,
        "--result-file",
        result_file,
        "--seconds",
        120,
        timeout=240,
    )
    assert done.returncode == 0, f"the recovering runner exited with {done.returncode}\n{done.stdout}\n{done.stderr}"
    return json.loads(result_file.read_text())


def assert_recovered(db_query, crash, result):
    assert result["status"] == "Completed", result
    assert result["error_message"] is None
    assert result["execution_id"] == crash.execution_id
    assert result["final_context"] == EXPECTED_FINAL_CONTEXT

    ran = side_effects(crash.side_file)
    assert Counter(task for task, _ in ran) == {"a": 1, "b": 2, "c": 1, "d": 1}, ran
    pids = {task: [pid for t, pid in ran if t == task] for task in "abcd"}
    assert pids["a"] == [crash.first_pid] and pids["d"] == [crash.first_pid]
    assert pids["b"] == [crash.first_pid, result["pid"]], ran  # interrupted, then rerun
    assert pids["c"] == [result["pid"]], ran

    states = task_states(db_query, crash.url, crash.execution_id)
    assert states == {
        "a": ("completed", "1"),
        "b": ("completed", "2"),
        "c": ("completed", "1"),
        "d": ("completed", "1"),
    }, states
    status, finished_at = execution_state(db_query, crash.url, crash.execution_id)
    assert status == "completed" and finished_at is not None


def stay_up(run_scenario, crash, *extra):
    """Run an idle runner process for three lease periods; what it saw of the execution."""
    ready, seen = crash.tmp_path / "idle-ready", crash.tmp_path / "idle-seen.json"
    done = run_scenario(
        "recovery_runner.py",
        *crash.common,
        "--mode",
        "idle",
        *extra,
        "--execution-id",
        crash.execution_id,
        "--ready-file",
        ready,
        "--result-file",
        seen,
        "--seconds",
        3 * LEASE_SECONDS,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert ready.exists()
    return json.loads(seen.read_text())


def test_a_new_runner_finishes_an_interrupted_execution(interrupted, run_scenario, db_query):
    assert_still_interrupted(db_query, interrupted)

    result = resume(run_scenario, interrupted)

    assert_recovered(db_query, interrupted, result)
    # and any runner sees the recovered result, here one in the test process
    with cloaca.DefaultRunner(interrupted.url) as runner:
        seen = runner.get_execution(interrupted.execution_id)
        assert seen.status == "Completed"
        assert seen.final_context.to_dict() == EXPECTED_FINAL_CONTEXT
        assert seen.end_time is not None
        assert [
            r.execution_id for r in runner.list_executions(workflow_name=interrupted.workflow, status="Completed")
        ] == [interrupted.execution_id]


@pytest.mark.parametrize("register", ["none", "other-version"])
def test_a_runner_without_the_workflow_leaves_it_alone(interrupted, run_scenario, db_query, register):
    """A runner with no such workflow registered, or with another version of it under
    the same name, does not claim the expired task; the execution waits for a runner
    that has it."""
    before = interrupted.side_file.read_text()

    seen = stay_up(run_scenario, interrupted, "--register", register)

    assert seen["status"] in ("Pending", "Running"), seen
    assert seen["end_time"] is None
    assert interrupted.side_file.read_text() == before
    assert_still_interrupted(db_query, interrupted, b_states=("running", "ready"))

    # it was recoverable all along: a runner with the right workflow finishes it
    assert_recovered(db_query, interrupted, resume(run_scenario, interrupted))


def test_a_runner_with_recovery_disabled_does_not_claim_it(interrupted, run_scenario, db_query):
    before = interrupted.side_file.read_text()

    seen = stay_up(run_scenario, interrupted, "--register", "same", "--no-recovery")

    assert seen["status"] in ("Pending", "Running"), seen
    assert interrupted.side_file.read_text() == before
    assert_still_interrupted(db_query, interrupted, b_states=("running", "ready"))

    assert_recovered(db_query, interrupted, resume(run_scenario, interrupted))
