"""Event triggers: @cloaca.trigger, TriggerResult, the runner's trigger methods, and
what a runner does with a trigger (registration, one polling owner per trigger
across processes under a lease, exactly one execution per recorded fire).

Triggers are process-wide definitions that every runner of the process
registers and polls, so the behaviour is exercised in runner processes of their
own (scenarios/trigger_worker.py); the runners this process opens to look at the
database have enable_trigger_scheduling=False.
"""

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

import cloaca
from conftest import poll_until


def reader(url):
    """A runner of this process that only looks (it registers and polls nothing)."""
    return cloaca.DefaultRunner.with_config(url, cloaca.DefaultRunnerConfig(enable_trigger_scheduling=False))


def ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp() * 1000)


def polls(poll_file, name=None):
    """(name, pid, start_ms, end_ms) of each poll recorded in the poll file."""
    if not os.path.exists(poll_file):
        return []
    rows = []
    for line in Path(poll_file).read_text().splitlines():
        _, n, pid, start, end = line.split()
        if name is None or n == name:
            rows.append((n, int(pid), int(start), int(end)))
    return rows


def runs(side_file):
    """(trigger_name, pid, input) of each task run recorded in the side-effect file."""
    if not os.path.exists(side_file):
        return []
    rows = []
    for line in Path(side_file).read_text().splitlines():
        _, name, pid, data = line.split(" ", 3)
        rows.append((name, int(pid), json.loads(data)))
    return rows


class Worker:
    """Starts scenarios/trigger_worker.py processes on one database."""

    def __init__(self, run_scenario, tmp_path, url, workflow):
        self.run_scenario, self.tmp_path, self.url, self.workflow = run_scenario, tmp_path, url, workflow
        self.side_file = tmp_path / "side.txt"
        self.poll_file = tmp_path / "polls.txt"
        self.count = 0

    def start(self, *triggers, config=None, extra=(), wait=True):
        self.count += 1
        ready = self.tmp_path / f"ready-{self.count}"
        stop_file = self.tmp_path / f"stop-{self.count}"
        args = ["--url", self.url, "--workflow", self.workflow, "--side-file", self.side_file]
        args += ["--poll-file", self.poll_file, "--ready-file", ready, "--stop-file", stop_file, "--seconds", 150]
        for spec in triggers:
            args += ["--trigger", json.dumps(spec)]
        fields = {"task_lease_seconds": 1.5, "executor_poll_interval_ms": 50, **(config or {})}
        for field, value in fields.items():
            args += ["--config", f"{field}={json.dumps(value)}"]
        proc = self.run_scenario.start("trigger_worker.py", *args, *extra)
        proc.stop_file = stop_file
        if wait:
            poll_until(ready.exists, 120, "the trigger worker to open its runner", proc=proc)
        return proc

    def stop(self, proc):
        """Shuts the worker's runner down (which releases its leases) and waits for it to exit."""
        proc.stop_file.touch()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {proc.pid} did not stop\n{proc.output()}")
        assert proc.returncode == 0, proc.output()


@pytest.fixture
def worker(run_scenario, tmp_path, fresh_database_url, workflow_name):
    return Worker(run_scenario, tmp_path, fresh_database_url, workflow_name)


def trigger_name():
    return f"trigger_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- decorator ---


class TestDecorator:
    def test_it_returns_the_function_unchanged_and_callable(self):
        def check_inbox():
            return cloaca.TriggerResult.skip()

        decorator = cloaca.trigger(on=f"no_such_workflow_{uuid.uuid4().hex}", poll_interval="5m")
        assert isinstance(decorator, cloaca.TriggerDecorator)
        assert decorator(check_inbox) is check_inbox
        assert check_inbox().is_skip_result()

    @pytest.mark.parametrize("interval", ["1.5s", "10", "s", "", "-1s", "5d", "5 s", "1e3ms", "5S"])
    def test_a_bad_poll_interval_is_refused_naming_it(self, interval):
        with pytest.raises(ValueError, match=f"Invalid poll_interval '{interval}'"):
            cloaca.trigger(on="w", poll_interval=interval)

    @pytest.mark.parametrize("interval", ["0s", " 250ms ", "30s", "5m", "2h"])
    def test_whole_numbers_with_a_unit_are_accepted(self, interval):
        assert isinstance(cloaca.trigger(on="w", poll_interval=interval), cloaca.TriggerDecorator)

    def test_cron_and_poll_interval_together_are_refused_naming_both(self):
        with pytest.raises(ValueError) as raised:
            cloaca.trigger(on="w", cron="0 3 * * *", poll_interval="30s")
        assert "cron=" in str(raised.value) and "poll_interval=" in str(raised.value)

    def test_the_cron_form_needs_on(self):
        with pytest.raises(ValueError, match="needs on="):
            cloaca.trigger(cron="0 3 * * *")

    def test_the_cron_expression_is_not_checked_at_decoration(self):
        assert isinstance(cloaca.trigger(on="w", cron="not a cron", timezone="Mars/Base"), cloaca.TriggerDecorator)

    def test_it_is_keyword_only_and_must_be_called(self):
        def poll():
            return True

        with pytest.raises(TypeError):
            cloaca.trigger(poll)
        with pytest.raises(TypeError):
            cloaca.trigger("w")

    def test_it_decorates_only_callables(self):
        with pytest.raises(TypeError, match="decorates a function, not int"):
            cloaca.trigger(on="w")(42)

    def test_a_callable_without_a_name_needs_name(self):
        import functools

        with pytest.raises(TypeError, match="name="):
            cloaca.trigger(on="w")(functools.partial(print, "x"))

    def test_an_empty_name_is_refused(self):
        with pytest.raises(ValueError, match='name=""'):
            cloaca.trigger(name="", on="w")(lambda: True)


# ------------------------------------------------------------ TriggerResult ---


class TestTriggerResult:
    def test_skip_and_fire(self):
        skip, fire = cloaca.TriggerResult.skip(), cloaca.TriggerResult.fire()
        assert skip.is_skip_result() and not skip.is_fire_result()
        assert fire.is_fire_result() and not fire.is_skip_result()
        assert repr(skip) == "TriggerResult.Skip"
        assert repr(fire) == "TriggerResult.Fire(None)"
        assert repr(cloaca.TriggerResult.fire(None)) == "TriggerResult.Fire(None)"

    def test_fire_copies_a_context_when_called(self):
        ctx = cloaca.Context({"file": "a.csv"})
        result = cloaca.TriggerResult.fire(ctx)
        ctx.set("file", "changed.csv")
        assert repr(result) == "TriggerResult.Fire(Context({'file': 'a.csv'}))"

    def test_fire_accepts_a_dict(self):
        assert repr(cloaca.TriggerResult.fire({"n": 1})) == "TriggerResult.Fire(Context({'n': 1}))"

    def test_fire_refuses_other_types(self):
        with pytest.raises(TypeError, match="not int"):
            cloaca.TriggerResult.fire(42)

    def test_there_is_no_constructor(self):
        with pytest.raises(TypeError):
            cloaca.TriggerResult()


# ------------------------------------------------------------ runner methods ---


class TestRunnerMethods:
    def test_unknown_names(self, fresh_database_url):
        with reader(fresh_database_url) as runner:
            assert runner.get_trigger_schedule("nobody") is None
            assert runner.get_trigger_execution_history("nobody") == []
            assert runner.set_trigger_enabled("nobody", False) is None
            assert runner.list_trigger_schedules() == []
            assert runner.list_trigger_schedules(None, None, None) == []
            assert runner.list_trigger_schedules(enabled_only=True) == []

    def test_enabled_must_be_a_bool(self, fresh_database_url):
        with reader(fresh_database_url) as runner, pytest.raises(TypeError):
            runner.set_trigger_enabled("nobody", 1)

    def test_bad_paging_names_the_value_with_the_method_phrase(self, fresh_database_url):
        with reader(fresh_database_url) as runner:
            with pytest.raises(ValueError, match="Failed to list trigger schedules: limit=0"):
                runner.list_trigger_schedules(limit=0)
            with pytest.raises(ValueError, match="Failed to get trigger execution history: offset=-1"):
                runner.get_trigger_execution_history("x", offset=-1)

    def test_a_database_error_is_a_value_error_with_the_method_phrase(self, fresh_database_url, db_query):
        with reader(fresh_database_url) as runner:
            db_query(fresh_database_url, "DROP TABLE cloaca_trigger_executions")
            db_query(fresh_database_url, "DROP TABLE cloaca_trigger_schedules")
            calls = [
                ("Failed to list trigger schedules: ", lambda: runner.list_trigger_schedules()),
                ("Failed to get trigger schedule: ", lambda: runner.get_trigger_schedule("x")),
                ("Failed to update trigger: ", lambda: runner.set_trigger_enabled("x", True)),
                ("Failed to get trigger execution history: ", lambda: runner.get_trigger_execution_history("x")),
            ]
            for prefix, call in calls:
                with pytest.raises(ValueError) as raised:
                    call()
                assert str(raised.value).startswith(prefix), str(raised.value)

    def test_listing_orders_and_dict_keys(self, worker):
        names = [trigger_name() for _ in range(3)]
        specs = [{"name": n, "mode": "skip", "poll_interval": "1h"} for n in names]
        specs.append({"name": "trigger_without_workflow", "mode": "skip", "on": None})
        proc = worker.start(*specs)
        with reader(worker.url) as runner:
            poll_until(lambda: len(runner.list_trigger_schedules()) == 3, 30, "three registered triggers", proc=proc)
            assert runner.get_trigger_schedule("trigger_without_workflow") is None
            rows = runner.list_trigger_schedules()
            assert set(rows[0]) == {
                "id", "trigger_name", "workflow_name", "poll_interval_ms", "allow_concurrent", "enabled",
                "last_poll_at", "created_at", "updated_at",
            }  # fmt: skip
            one = runner.get_trigger_schedule(names[0])
            assert one["workflow_name"] == worker.workflow
            assert (one["poll_interval_ms"], one["allow_concurrent"], one["enabled"]) == (3_600_000, False, True)
            uuid.UUID(one["id"])
            newest_first = [r["trigger_name"] for r in rows]
            created = [ms(r["created_at"]) for r in rows]
            assert created == sorted(created, reverse=True)
            assert [r["trigger_name"] for r in runner.list_trigger_schedules(limit=2)] == newest_first[:2]
            assert [r["trigger_name"] for r in runner.list_trigger_schedules(None, 2, 1)] == newest_first[1:]
            runner.set_trigger_enabled(newest_first[1], False)
            enabled = [r["trigger_name"] for r in runner.list_trigger_schedules(enabled_only=True, limit=1, offset=5)]
            assert enabled == [newest_first[2], newest_first[0]], "oldest first, paging ignored"
            assert runner.get_trigger_schedule(newest_first[1])["enabled"] is False


# ------------------------------------------------------------------ firing ---


class TestFiring:
    def test_a_fire_starts_exactly_one_execution_with_the_trigger_keys(self, worker):
        name = trigger_name()
        proc = worker.start({"name": name, "mode": "fire_dict", "poll_interval": "1h"})
        with reader(worker.url) as runner:
            history = poll_until(
                lambda: [h for h in runner.get_trigger_execution_history(name) if h["completed_at"]],
                30,
                "the fire's execution to finish",
                proc=proc,
            )
            worker.stop(proc)
            assert len(history) == 1
            run = history[0]
            assert set(run) >= {"id", "schedule_id", "context_hash", "workflow_execution_id", "started_at",
                                "completed_at", "created_at"}  # fmt: skip
            schedule = runner.get_trigger_schedule(name)
            assert run["schedule_id"] == schedule["id"]
            assert run["status"] == "Completed"
            result = runner.get_execution(run["workflow_execution_id"])
            assert result.status == "Completed"
            assert run["completed_at"] == result.end_time, "completed_at is when the execution finished"
            data = result.final_context.to_dict()
            assert data["trigger_name"] == name, "the trigger's keys override the fire's"
            assert data["x"] == 1
            assert data["triggered_at"].endswith("+00:00")
            assert schedule["last_poll_at"] is not None
            assert len(runner.list_executions(workflow_name=worker.workflow)) == 1
        assert [r[0] for r in runs(worker.side_file)] == [name]

    def test_true_fires_and_skips_errors_and_none_only_record_the_poll(self, worker):
        names = {mode: trigger_name() for mode in ["true", "skip", "raise", "none"]}
        specs = [{"name": n, "mode": m, "poll_interval": "1h"} for m, n in names.items()]
        proc = worker.start(*specs)
        with reader(worker.url) as runner:
            for mode, name in names.items():
                poll_until(
                    lambda n=name: (runner.get_trigger_schedule(n) or {}).get("last_poll_at"),
                    30,
                    f"the {mode} poll to be recorded",
                    proc=proc,
                )
            poll_until(lambda: runs(worker.side_file), 30, "the True poll's execution", proc=proc)
            assert len(runner.get_trigger_execution_history(names["true"])) == 1
            for mode in ["skip", "raise", "none"]:
                assert runner.get_trigger_execution_history(names[mode]) == [], mode
        worker.stop(proc)
        assert [r[0] for r in runs(worker.side_file)] == [names["true"]]
        assert "the poll failed on purpose" in proc.err_path.read_text()
        assert names["raise"] in proc.err_path.read_text(), "the error names the trigger"

    def test_allow_concurrent_false_drops_equal_fires_while_one_runs(self, worker, tmp_path):
        name = trigger_name()
        marker = tmp_path / "block"
        marker.touch()
        proc = worker.start(
            {"name": name, "mode": "fire_same", "poll_interval": "100ms"}, extra=["--block-marker", marker]
        )
        with reader(worker.url) as runner:
            poll_until(lambda: runs(worker.side_file), 30, "the first execution to run", proc=proc)
            # Many more polls fire an equal context while the first execution runs.
            start = len(polls(worker.poll_file))
            poll_until(lambda: len(polls(worker.poll_file)) >= start + 5, 30, "more polls", proc=proc)
            history = runner.get_trigger_execution_history(name)
            assert len(history) == 1, history
            marker.unlink()
            poll_until(
                lambda: len(runner.get_trigger_execution_history(name)) >= 2, 30, "a fire after it finished", proc=proc
            )
            worker.stop(proc)
            history = runner.get_trigger_execution_history(name)
            assert len({h["context_hash"] for h in history}) == 1
            assert history[0]["context_hash"] != "fire_no_context" and len(history[0]["context_hash"]) == 64
            executions = runner.list_executions(workflow_name=worker.workflow)
            assert len(executions) == len(history)

    def test_allow_concurrent_true_fires_every_time(self, worker, tmp_path):
        name = trigger_name()
        marker = tmp_path / "block"
        marker.touch()
        proc = worker.start(
            {"name": name, "mode": "fire_none", "poll_interval": "100ms", "allow_concurrent": True},
            config={"max_concurrent_tasks": 8},
            extra=["--block-marker", marker],
        )
        with reader(worker.url) as runner:
            poll_until(lambda: len(runner.get_trigger_execution_history(name)) >= 3, 30, "three fires", proc=proc)
            running = runner.list_executions(workflow_name=worker.workflow, status="Running")
            assert len(running) >= 2, "fires start executions while earlier ones still run"
            marker.unlink()
            worker.stop(proc)
            history = runner.get_trigger_execution_history(name)
            assert {h["context_hash"] for h in history} == {"fire_no_context"}
            assert len(runner.list_executions(workflow_name=worker.workflow, limit=1000)) == len(history)

    def test_disabling_stops_polling_and_survives_a_restart(self, worker):
        name = trigger_name()
        spec = {"name": name, "mode": "skip", "poll_interval": "100ms"}
        proc = worker.start(spec)
        poll_until(lambda: polls(worker.poll_file, name), 30, "a poll", proc=proc)
        with reader(worker.url) as runner:
            runner.set_trigger_enabled(name, False)
            time.sleep(0.5)  # a poll already started may still be recorded
            seen = len(polls(worker.poll_file, name))
            time.sleep(1.5)
            assert len(polls(worker.poll_file, name)) == seen, "a disabled trigger is not polled"
            worker.stop(proc)
            proc = worker.start(spec)
            time.sleep(2)
            assert len(polls(worker.poll_file, name)) == seen, "nor after a restart"
            assert runner.get_trigger_schedule(name)["enabled"] is False
            runner.set_trigger_enabled(name, True)
            poll_until(lambda: len(polls(worker.poll_file, name)) > seen, 30, "polling again once enabled", proc=proc)
        worker.stop(proc)

    def test_shutdown_releases_the_lease_at_once(self, worker):
        name = trigger_name()
        spec = {"name": name, "mode": "skip", "poll_interval": "100ms"}
        config = {"task_lease_seconds": 30}
        first = worker.start(spec, config=config)
        poll_until(lambda: polls(worker.poll_file, name), 30, "a poll", proc=first)
        second = worker.start(spec, config=config)
        time.sleep(1.5)
        assert {p[1] for p in polls(worker.poll_file, name)} == {first.pid}, "the lease holder alone polls"
        worker.stop(first)
        stopped = time.time()
        poll_until(
            lambda: [p for p in polls(worker.poll_file, name) if p[1] == second.pid],
            15,
            "the other to poll",
            proc=second,
        )
        assert time.time() - stopped < 10, "taken over long before the 30 s lease would have expired"
        worker.stop(second)

    def test_a_restart_resumes_at_the_last_poll_plus_the_interval(self, worker):
        name = trigger_name()
        spec = {"name": name, "mode": "skip", "poll_interval": "4s"}
        proc = worker.start(spec)
        poll_until(lambda: polls(worker.poll_file, name), 30, "the first poll", proc=proc)
        worker.stop(proc)
        first = polls(worker.poll_file, name)[-1]
        proc = worker.start(spec)
        second = poll_until(
            lambda: [p for p in polls(worker.poll_file, name) if p[1] == proc.pid], 30, "the next poll", proc=proc
        )[0]
        worker.stop(proc)
        assert second[2] - first[2] >= 4000 - 50, "not before last_poll_at + interval"

    def test_a_trigger_defined_after_the_runner_opened_is_registered_within_a_second(self, worker, tmp_path):
        name = trigger_name()
        defined = tmp_path / "defined"
        spec = {"name": name, "mode": "skip", "poll_interval": "1h"}
        proc = worker.start(extra=["--define-later", json.dumps(spec), "--defined-file", defined])
        poll_until(defined.exists, 30, "the later definition", proc=proc)
        with reader(worker.url) as runner:
            row = poll_until(lambda: runner.get_trigger_schedule(name), 10, "its registration", proc=proc)
            assert ms(row["created_at"]) - int(defined.read_text()) <= 1500
        worker.stop(proc)

    def test_the_later_of_two_definitions_of_a_name_is_used_with_a_warning(self, worker):
        name = trigger_name()
        first = {"name": name, "mode": "skip", "poll_interval": "1h"}
        second = {"name": name, "mode": "skip", "poll_interval": "2h", "allow_concurrent": True}
        proc = worker.start(first, second)
        with reader(worker.url) as runner:
            row = poll_until(lambda: runner.get_trigger_schedule(name), 30, "its registration", proc=proc)
            assert (row["poll_interval_ms"], row["allow_concurrent"]) == (7_200_000, True)
        worker.stop(proc)
        assert f"trigger {name!r}".replace("'", '"') in proc.err_path.read_text()
        assert "defined more than once" in proc.err_path.read_text()

    def test_a_poll_trigger_without_on_is_never_registered_and_a_warning_names_it(self, worker):
        name = trigger_name()
        proc = worker.start({"name": name, "mode": "true", "on": None, "poll_interval": "100ms"})
        time.sleep(1.5)
        with reader(worker.url) as runner:
            assert runner.get_trigger_schedule(name) is None
        worker.stop(proc)
        assert polls(worker.poll_file) == []
        assert name in proc.err_path.read_text() and "no on= workflow" in proc.err_path.read_text()

    def test_a_runner_without_the_workflow_registers_but_never_polls(self, worker):
        name = trigger_name()
        proc = worker.start({"name": name, "mode": "true", "on": "a_workflow_nobody_defined", "poll_interval": "100ms"})
        with reader(worker.url) as runner:
            row = poll_until(lambda: runner.get_trigger_schedule(name), 30, "its registration", proc=proc)
            assert row["workflow_name"] == "a_workflow_nobody_defined"
            time.sleep(1.5)
            assert runner.get_trigger_schedule(name)["last_poll_at"] is None
        worker.stop(proc)
        assert polls(worker.poll_file) == []

    def test_a_runner_without_trigger_scheduling_registers_nothing(self, worker):
        name = trigger_name()
        proc = worker.start({"name": name, "mode": "true"}, config={"enable_trigger_scheduling": False})
        time.sleep(1.5)
        with reader(worker.url) as runner:
            assert runner.get_trigger_schedule(name) is None
        worker.stop(proc)
        assert polls(worker.poll_file) == []

    def test_a_cron_trigger_registers_one_cron_schedule_for_its_workflow(self, worker):
        name = trigger_name()
        extra = ["--cron", f"{name}=0 3 * * *"]
        first = worker.start(extra=extra)
        second = worker.start(extra=extra)
        with reader(worker.url) as runner:
            schedules = poll_until(lambda: runner.list_cron_schedules(), 30, "the cron schedule", proc=second)
            time.sleep(1.5)
            schedules = runner.list_cron_schedules()
            assert len(schedules) == 1, "one schedule, whichever process registers it"
            assert (schedules[0]["workflow_name"], schedules[0]["cron_expression"]) == (worker.workflow, "0 3 * * *")
            assert runner.get_trigger_schedule(name) is None, "a cron trigger is not polled"
        worker.stop(first)
        worker.stop(second)
        third = worker.start(extra=extra)
        time.sleep(1.5)
        with reader(worker.url) as runner:
            assert [s["id"] for s in runner.list_cron_schedules()] == [schedules[0]["id"]], "idempotent across restarts"
        worker.stop(third)


# -------------------------------------------- several processes (postgres) ---


@pytest.mark.usefixtures("postgres_only")
class TestOnePollerAcrossProcesses:
    def test_one_poller_at_a_time_and_one_execution_per_fire_and_takeover_after_sigkill(self, worker):
        name = trigger_name()
        spec = {"name": name, "mode": "fire_unique", "poll_interval": "100ms", "allow_concurrent": True}
        procs = [worker.start(spec, config={"max_concurrent_tasks": 8}) for _ in range(3)]
        poll_until(lambda: len(polls(worker.poll_file, name)) >= 10, 60, "ten polls", proc=procs[0])
        owner = polls(worker.poll_file, name)[-1][1]
        victim = next(p for p in procs if p.pid == owner)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        killed_at = time.time() * 1000
        poll_until(
            lambda: [p for p in polls(worker.poll_file, name) if p[1] != owner and p[2] > killed_at],
            60,
            "another process to take over polling",
            proc=next(p for p in procs if p is not victim),
        )
        poll_until(
            lambda: len([p for p in polls(worker.poll_file, name) if p[2] > killed_at]) >= 10, 60, "polling to go on"
        )
        for proc in procs:
            if proc is not victim:
                worker.stop(proc)

        recorded = polls(worker.poll_file, name)
        ordered = sorted(recorded, key=lambda p: p[2])
        overlaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if b[2] < a[3]]
        assert not overlaps, f"two polls ran at once: {overlaps[:3]}"
        assert len({p[1] for p in recorded}) >= 2, "the poller changed after the kill"

        with reader(worker.url) as runner:
            history = runner.get_trigger_execution_history(name, limit=10_000)
            ids = [h["workflow_execution_id"] for h in history]
            assert len(ids) == len(set(ids))
            executions = runner.list_executions(workflow_name=worker.workflow, limit=10_000)
            assert sorted(e.execution_id for e in executions) == sorted(ids), "one execution per recorded fire"
        fired = [r[2]["n"] for r in runs(worker.side_file)]
        # A task may run again after its runner was killed mid-task (at least once), never for a new fire.
        assert len(set(fired)) <= len(history)
