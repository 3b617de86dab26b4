"""Several runner processes share one postgres database (postgres only).

Three processes (scenarios/scale_worker.py) register the same workflow, a root,
200 independent middle tasks and a join; one of them starts it. Every task
appends "<task_id> <pid>" to one shared side-effect file. Claims are made with
FOR UPDATE SKIP LOCKED, so each task must run exactly once, and the work must be
shared (more than one process ran tasks).
"""

import json
import subprocess
import time
from collections import Counter

import pytest

from conftest import start_scale_workers

MIDDLE_TASKS = 200
TASK_IDS = ["root", *(f"m{i:03d}" for i in range(MIDDLE_TASKS)), "join"]


@pytest.fixture(autouse=True)
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip(
            "scale-out across runner processes is a postgres feature (claims with "
            "FOR UPDATE SKIP LOCKED, wake-ups by LISTEN/NOTIFY); a sqlite database "
            "has a single writer and is not shared between machines"
        )


def test_three_runner_processes_share_one_workflow(
    fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until, db_query
):
    side_file = tmp_path / "side-effects.txt"
    side_file.touch()
    result_file = tmp_path / "result.json"
    common = [
        "--url",
        fresh_database_url,
        "--workflow",
        workflow_name,
        "--side-file",
        side_file,
        "--tasks",
        MIDDLE_TASKS,
        "--seconds",
        240,
    ]

    workers, starter = start_scale_workers(run_scenario, wait_until, tmp_path, common, result_file)
    processes = [*workers, starter]

    # Bounded lifetimes: each waits for at most its own deadline; run_scenario kills
    # whatever is left when the test ends, passed or not.
    for proc in processes:
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"runner process {proc.pid} did not finish\n{proc.output()}")
        assert proc.returncode == 0, proc.output()

    result = json.loads(result_file.read_text())
    assert result["status"] == "Completed", result["error_message"]
    final = result["final_context"]
    assert final["join_saw"] == MIDDLE_TASKS
    assert all(task_id in final for task_id in TASK_IDS if task_id != "join")

    lines = [line.split() for line in side_file.read_text().splitlines()]
    counts = Counter(task for task, _ in lines)
    duplicated = {task: n for task, n in counts.items() if n != 1}
    assert not duplicated, f"tasks that ran more than once: {duplicated}"
    assert sorted(counts) == sorted(TASK_IDS)

    pids = {int(pid) for _, pid in lines}
    assert pids <= {proc.pid for proc in processes}, pids
    per_process = Counter(int(pid) for _, pid in lines)
    assert len(pids) > 1, f"one process ran every task: {dict(per_process)}"
    # each middle task recorded the pid that ran it; the context agrees with the file
    ran_by = {task: int(pid) for task, pid in lines}
    assert all(final[f"m{i:03d}"] == ran_by[f"m{i:03d}"] for i in range(MIDDLE_TASKS))

    rows = db_query(
        fresh_database_url,
        f"SELECT task_id, status, attempt FROM cloaca_task_executions WHERE execution_id = '{result['execution_id']}'",
    )
    assert sorted(task for task, _, _ in rows) == sorted(TASK_IDS)
    not_once = [row for row in rows if row[1:] != ("completed", "1")]
    assert not not_once, f"tasks not completed in exactly one attempt: {not_once[:10]}"
    assert db_query(
        fresh_database_url, f"SELECT status FROM cloaca_executions WHERE id = '{result['execution_id']}'"
    ) == [("completed",)]


def test_idle_runners_in_other_processes_are_woken_by_notify(
    fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until
):
    """Both runners poll only once a minute, so the run can finish within the wait
    only if the idle process is woken by NOTIFY cloaca_work and the waiting one by
    NOTIFY cloaca_done."""
    import cloaca

    ready, done = tmp_path / "ready", tmp_path / "done"
    worker = run_scenario.start("notify_worker.py", fresh_database_url, workflow_name, ready, done)
    wait_until(ready.exists, 120, "the idle runner process to open its runner", proc=worker)
    worker_pid = int(ready.read_text())

    # The same definition as the worker's (same version); this process's only
    # worker thread is kept busy by `blocker`, so the other process must run it.
    with cloaca.WorkflowBuilder(workflow_name) as builder:
        builder.description("woken by NOTIFY")

        @cloaca.task(id="remote")
        def remote(ctx):
            return ctx

    with cloaca.WorkflowBuilder(f"{workflow_name}_blocker") as builder:

        @cloaca.task(id="block")
        def block(ctx):
            time.sleep(4)
            return ctx

    config = cloaca.DefaultRunnerConfig(executor_poll_interval_ms=60_000, max_concurrent_tasks=1)
    try:
        with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
            busy = runner.execute_async(f"{workflow_name}_blocker")
            wait_until(lambda: busy.status() == "Running", 30, "the blocker to occupy the local worker")
            result = runner.execute_async(workflow_name, {}).wait(timeout=3)
            assert result.status == "Completed", result.error_message
            assert result.final_context["ran_in"] == worker_pid
    finally:
        done.touch()
    assert worker.wait(timeout=60) == 0, worker.output()
