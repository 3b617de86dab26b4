"""Cron scheduling, for real, on both backends (one test is postgres only).

Schedules are registered, read, changed and deleted through the runner's API,
and their ticks fire for real: 6-field expressions with seconds and a cron
poll interval of 0.2 s keep every test within seconds. A tick's task (the
workflow of scenarios/cron_worker.py, also registered here in the test process
so that both have the same version) appends "start <scheduled time> <pid>" and
"done <scheduled time> <pid>" to a side-effect file, so how often a tick really
ran is counted outside the engine and compared with the history.

Nothing here asserts how fast anything is: waits are bounded only to keep a
broken engine from hanging the suite. next_run_at is checked against the
expression with zoneinfo for whatever date "now" is, including the time-zone
rules of a DST change (the engine's own tests cover the tick arithmetic with
an injected clock).
"""

import importlib.util
import json
import os
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, time as clock, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

import cloaca

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def _load_cron_worker():
    """scenarios/cron_worker.py as a module (its workflow definition and expression helpers)."""
    if str(SCENARIOS) not in sys.path:
        sys.path.append(str(SCENARIOS))  # for its `from _scenario import ...`
    spec = importlib.util.spec_from_file_location("cron_worker", SCENARIOS / "cron_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cron_worker = _load_cron_worker()

UTC = timezone.utc
WAIT = 60  # seconds: bound of waits that should end within a few seconds
POLL = 0.2  # cron_poll_interval_seconds of every ticking runner here
LOST_MINUTES = 0.03  # cron_lost_threshold_minutes: 1.8 s without progress
SECOND = timedelta(seconds=1)

SCHEDULE_KEYS = {
    "id",
    "workflow_name",
    "cron_expression",
    "timezone",
    "enabled",
    "next_run_at",
    "last_run_at",
    "created_at",
    "updated_at",
    "skipped_ticks",
    "catchup_policy",
    "instance_name",
    "params",
}
HISTORY_KEYS = {
    "id",
    "schedule_id",
    "workflow_name",
    "scheduled_time",
    "claimed_at",
    "execution_id",
    "pipeline_execution_id",
    "workflow_execution_id",
    "attempt",
    "status",
    "created_at",
    "updated_at",
}
STATS_KEYS = {
    "total_executions",
    "successful_executions",
    "failed_executions",
    "running_executions",
    "lost_executions",
    "success_rate",
}
FINAL = ("Completed", "Failed", "Lost")


# --------------------------------------------------------------------------- helpers


def utc_now():
    return datetime.now(UTC)


def whole(t):
    """`t` truncated to its whole second."""
    return t.replace(microsecond=0)


def instant(text, *, utc=True):
    """An RFC 3339 timestamp as an aware datetime (fails the test otherwise)."""
    assert isinstance(text, str), f"expected an RFC 3339 string, got {text!r}"
    parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    assert parsed.tzinfo is not None, f"{text!r} has no UTC offset"
    if utc:
        assert parsed.utcoffset() == timedelta(0), f"{text!r} is not UTC"
    return parsed


def names(message, value):
    """Whether an error message names `value` (quoted the Python or the Rust/JSON way)."""
    return repr(value) in message or json.dumps(value) in message


def runner_on(url, **fields):
    return cloaca.DefaultRunner.with_config(url, cloaca.DefaultRunnerConfig(**fields))


def quiet_runner(url):
    """A runner that fires no ticks: for schedule bookkeeping only."""
    return runner_on(url, enable_cron_scheduling=False)


def ticking_runner(url, **fields):
    return runner_on(url, cron_poll_interval_seconds=POLL, **fields)


@pytest.fixture
def side(tmp_path):
    """An empty file the tasks of these tests append one line per run to."""
    side = tmp_path / "side.txt"
    side.touch()
    return side


def define(name, side_file, block_marker=None, fail=False):
    cron_worker.define_workflow(name, str(side_file), str(block_marker) if block_marker else None, fail=fail)


def history(runner, schedule_id):
    return runner.get_cron_execution_history(schedule_id, limit=1000)


def scheduled_times(rows):
    return [instant(row["scheduled_time"]) for row in rows]


def finished_history(runner, schedule_id, at_least=1):
    """The history if it has `at_least` rows and all of them are finished, else None."""
    rows = history(runner, schedule_id)
    if len(rows) >= at_least and all(row["status"] in FINAL for row in rows):
        return rows
    return None


def settle(runner, schedule_id, wait_until):
    """Disable the schedule, then wait until every execution it started has finished."""
    runner.set_cron_schedule_enabled(schedule_id, False)
    return wait_until(
        lambda: finished_history(runner, schedule_id), WAIT, "the executions of the fired ticks to finish"
    )


def find_row(rows, scheduled, attempt, status=None):
    for row in rows:
        if (
            instant(row["scheduled_time"]) == scheduled
            and row["attempt"] == attempt
            and (status is None or row["status"] == status)
        ):
            return row
    return None


def side_runs(path, kind="done", pid=None):
    """[(scheduled time, pid)] of the side-effect lines of one kind ("start"/"done")."""
    runs = []
    for line in Path(path).read_text().splitlines():
        what, scheduled, who = line.split()
        if what == kind and (pid is None or int(who) == pid):
            runs.append((instant(scheduled), int(who)))
    return runs


def assert_consecutive(times, step=SECOND):
    ordered = sorted(times)
    gaps = [b - a for a, b in zip(ordered, ordered[1:])]
    assert all(gap == step for gap in gaps), f"ticks not {step} apart: {ordered}"


def assert_schedule(schedule, *, schedule_id, workflow, expression, tz, enabled=True, instance=None, params=None):
    assert set(schedule) == SCHEDULE_KEYS, sorted(schedule)
    assert schedule["instance_name"] == instance
    assert schedule["params"] == params
    assert schedule["id"] == schedule_id
    assert schedule["workflow_name"] == workflow
    assert schedule["cron_expression"] == expression
    assert schedule["timezone"] == tz
    assert schedule["enabled"] is enabled
    assert type(schedule["skipped_ticks"]) is int
    assert schedule["catchup_policy"] == "run_all"
    instant(schedule["next_run_at"])
    assert schedule["last_run_at"] is None or isinstance(schedule["last_run_at"], str)
    assert instant(schedule["updated_at"], utc=False) >= instant(schedule["created_at"], utc=False)


def assert_history_row(row, *, schedule_id, workflow):
    assert set(row) == HISTORY_KEYS, sorted(row)
    assert type(row["id"]) is int
    assert row["schedule_id"] == schedule_id
    assert row["workflow_name"] == workflow
    assert isinstance(row["execution_id"], str) and row["execution_id"]
    assert row["pipeline_execution_id"] == row["workflow_execution_id"] == row["execution_id"]
    assert type(row["attempt"]) is int and row["attempt"] >= 1
    assert row["status"] in ("Pending", "Running", "Completed", "Failed", "Lost"), row
    scheduled = instant(row["scheduled_time"])
    assert scheduled.microsecond == 0, f"not a whole second: {row['scheduled_time']!r}"
    # fired once due (a second of slack for a server clock that is not this machine's)
    assert instant(row["claimed_at"], utc=False) >= scheduled - SECOND, row
    instant(row["created_at"], utc=False)
    instant(row["updated_at"], utc=False)


def assert_stats(stats, rows):
    """The counters of get_cron_execution_stats agree with these history rows."""
    assert set(stats) == STATS_KEYS, sorted(stats)
    statuses = Counter(row["status"] for row in rows)
    total = len(rows)
    assert stats["total_executions"] == total, (stats, statuses)
    assert stats["successful_executions"] == statuses["Completed"], (stats, statuses)
    assert stats["failed_executions"] == statuses["Failed"], (stats, statuses)
    assert stats["running_executions"] == statuses["Pending"] + statuses["Running"], stats
    assert stats["lost_executions"] == statuses["Lost"], (stats, statuses)
    assert type(stats["success_rate"]) is float
    expected = 100.0 * statuses["Completed"] / total if total else 0.0
    assert stats["success_rate"] == pytest.approx(expected), stats


def sleep_until(when):
    time.sleep(max(0.0, (when - utc_now()).total_seconds()))


def planned_ticks(count, lead=1.5):
    """`count` consecutive whole UTC seconds in one minute, the first at least `lead` s away."""
    while True:
        first = whole(utc_now() + timedelta(seconds=lead)) + SECOND
        ticks = [first + i * SECOND for i in range(count)]
        if ticks[-1].minute == first.minute:
            return ticks
        time.sleep(1)  # the minute is about to turn: plan in the next one


# ---- what next_run_at must be, computed with zoneinfo ---------------------------------


def first_instant_at(wall, tz):
    """When a daily tick at local wall time `wall` (naive) fires on that date.

    The wall time itself if it exists once; its first occurrence if the clocks
    are set back over it; the first instant after the gap if they skip it.
    """
    candidates = sorted({wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)})
    for candidate in candidates:
        if candidate.astimezone(tz).replace(tzinfo=None) == wall:
            return candidate
    lo, hi = int(candidates[0].timestamp()), int(candidates[-1].timestamp())
    while lo < hi:  # in the gap: the first instant whose wall time is past `wall`
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return datetime.fromtimestamp(lo, UTC)


def next_fire(after, tz, times_of_day, day_ok=lambda day: True, days=1600):
    """The first tick strictly after `after` of a schedule firing at these local times
    of the days `day_ok` accepts."""
    start = after.astimezone(tz).date() - timedelta(days=1)
    for i in range(days):
        day = start + timedelta(days=i)
        if not day_ok(day):
            continue
        for at in times_of_day:
            fire = first_instant_at(datetime.combine(day, at), tz)
            if fire > after:
                return fire
    raise AssertionError("no tick within the searched days")


def assert_next_run_at(schedule, before, after, tz, times_of_day, day_ok=lambda day: True):
    """next_run_at is the first tick after the moment (between `before` and `after`)
    the engine computed it."""
    got = instant(schedule["next_run_at"])
    expected = {next_fire(t, tz, times_of_day, day_ok) for t in (before, after)}
    assert got in expected, (
        f"{schedule['cron_expression']!r} in {tz.key}: next_run_at "
        f"{got.astimezone(tz)} (local), expected {[e.astimezone(tz) for e in expected]}"
    )
    return got


def next_transition(tz, start, kind):
    """The first change of tz's UTC offset after `start` that is a "gap" (clocks
    jump forward) or an "overlap" (clocks set back): (instant, old offset, new offset)."""
    hour = whole(start).replace(minute=0, second=0)
    old = hour.astimezone(tz).utcoffset()
    for _ in range(24 * 400):
        following = hour + timedelta(hours=1)
        new = following.astimezone(tz).utcoffset()
        if new != old:
            lo, hi = int(hour.timestamp()), int(following.timestamp())
            while lo < hi:
                mid = (lo + hi) // 2
                if datetime.fromtimestamp(mid, tz).utcoffset() == new:
                    hi = mid
                else:
                    lo = mid + 1
            if (new > old) == (kind == "gap"):
                return datetime.fromtimestamp(lo, UTC), old, new
        hour, old = following, new
    raise AssertionError(f"{tz.key} has no {kind} within 400 days")


# =========================================================================== schedules


def test_register_get_list_update_enable_delete_round_trip(fresh_database_url, workflow_name, tmp_path, wait_until):
    define(workflow_name, tmp_path / "side.txt")
    berlin, tokyo = ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Tokyo")
    with quiet_runner(fresh_database_url) as runner:
        assert runner.list_cron_schedules() == []

        before = utc_now()
        first_id = runner.register_cron_workflow(workflow_name, "0 3 * * *", "Europe/Berlin")
        after = utc_now()
        assert isinstance(first_id, str) and uuid.UUID(first_id).version == 4
        assert str(uuid.UUID(first_id)) == first_id
        first = runner.get_cron_schedule(first_id)
        assert_schedule(first, schedule_id=first_id, workflow=workflow_name, expression="0 3 * * *", tz="Europe/Berlin")
        assert first["last_run_at"] is None and first["skipped_ticks"] == 0
        # at 03:00 Berlin time, the first such moment after registering
        next_run = assert_next_run_at(first, before, after, berlin, [clock(3)])
        assert next_run > before
        assert next_run.astimezone(berlin).time() == clock(3)
        created = instant(first["created_at"], utc=False)
        assert before - 5 * SECOND <= created <= after + 5 * SECOND, (before, created, after)

        time.sleep(0.01)  # created_at has millisecond resolution; keep the order unambiguous
        second_id = runner.register_cron_workflow(workflow_name, "@hourly")
        second = runner.get_cron_schedule(second_id)
        assert_schedule(second, schedule_id=second_id, workflow=workflow_name, expression="@hourly", tz="UTC")
        assert second_id != first_id

        # listing: oldest first, paged, filtered
        assert runner.list_cron_schedules() == [first, second]
        assert runner.list_cron_schedules(limit=1) == [first]
        assert runner.list_cron_schedules(limit=1, offset=1) == [second]
        assert runner.list_cron_schedules(offset=2) == []
        assert runner.list_cron_schedules(enabled_only=True) == [first, second]

        # update: a new expression, the time zone kept when not given
        time.sleep(0.01)
        before = utc_now()
        assert_returns_nothing_or_schedule(runner.update_cron_schedule(first_id, "15 4 * * *"), first_id)
        after = utc_now()
        updated = runner.get_cron_schedule(first_id)
        assert_schedule(
            updated, schedule_id=first_id, workflow=workflow_name, expression="15 4 * * *", tz="Europe/Berlin"
        )
        assert updated["created_at"] == first["created_at"]
        assert instant(updated["updated_at"], utc=False) >= instant(first["updated_at"], utc=False)
        assert_next_run_at(updated, before, after, berlin, [clock(4, 15)])

        # update with a time zone: 09:30 on weekdays in Tokyo (6 fields, seconds first)
        before = utc_now()
        runner.update_cron_schedule(first_id, "0 30 9 * * MON-FRI", "Asia/Tokyo")
        after = utc_now()
        updated = runner.get_cron_schedule(first_id)
        assert_schedule(
            updated, schedule_id=first_id, workflow=workflow_name, expression="0 30 9 * * MON-FRI", tz="Asia/Tokyo"
        )
        assert_next_run_at(updated, before, after, tokyo, [clock(9, 30)], lambda day: day.weekday() < 5)

        # disable / enable
        runner.set_cron_schedule_enabled(first_id, False)
        disabled = runner.get_cron_schedule(first_id)
        assert_schedule(
            disabled,
            schedule_id=first_id,
            workflow=workflow_name,
            expression="0 30 9 * * MON-FRI",
            tz="Asia/Tokyo",
            enabled=False,
        )
        assert runner.list_cron_schedules(enabled_only=True) == [second]
        assert [s["id"] for s in runner.list_cron_schedules()] == [first_id, second_id]
        before = utc_now()
        runner.set_cron_schedule_enabled(first_id, True)
        after = utc_now()
        enabled = runner.get_cron_schedule(first_id)
        assert enabled["enabled"] is True
        assert_next_run_at(enabled, before, after, tokyo, [clock(9, 30)], lambda day: day.weekday() < 5)

        # the history of a schedule that never fired is empty
        assert runner.get_cron_execution_history(first_id) == []
        listed = runner.list_cron_schedules()

    # stored: another runner on the same database sees the same schedules
    with quiet_runner(fresh_database_url) as runner:
        assert runner.list_cron_schedules() == listed
        runner.delete_cron_schedule(second_id)
        with pytest.raises(KeyError) as error:
            runner.get_cron_schedule(second_id)
        assert second_id in str(error.value)
        with pytest.raises(KeyError):
            runner.get_cron_execution_history(second_id)
        with pytest.raises(KeyError):
            runner.delete_cron_schedule(second_id)
        assert [s["id"] for s in runner.list_cron_schedules()] == [first_id]


def assert_returns_nothing_or_schedule(returned, schedule_id):
    """update/enable may return None or the changed schedule; nothing else."""
    assert returned is None or (isinstance(returned, dict) and returned["id"] == schedule_id), returned


NEXT_RUN_CASES = [
    # expression, time zone, local times of day, days it fires on
    pytest.param(
        "*/15 * * * *", "UTC", [clock(h, m) for h in range(24) for m in (0, 15, 30, 45)], None, id="every-15-minutes"
    ),
    pytest.param("0 0 9 * * MON-FRI", "UTC", [clock(9)], lambda d: d.weekday() < 5, id="6-fields-weekdays"),
    pytest.param("0 3 * * *", "Europe/Berlin", [clock(3)], None, id="berlin-03:00"),
    pytest.param("45 23 * * SUN", "Asia/Tokyo", [clock(23, 45)], lambda d: d.weekday() == 6, id="tokyo-sunday-night"),
    pytest.param("30 2 * * *", "America/New_York", [clock(2, 30)], None, id="new-york-02:30"),
    pytest.param("@hourly", "UTC", [clock(h) for h in range(24)], None, id="@hourly"),
    pytest.param("@daily", "UTC", [clock(0)], None, id="@daily"),
    pytest.param("@weekly", "UTC", [clock(0)], lambda d: d.weekday() == 6, id="@weekly"),
    pytest.param("@monthly", "UTC", [clock(0)], lambda d: d.day == 1, id="@monthly"),
    pytest.param("@yearly", "UTC", [clock(0)], lambda d: (d.month, d.day) == (1, 1), id="@yearly"),
    pytest.param(
        "0 12 * JAN,JUL MON",
        "UTC",
        [clock(12)],
        lambda d: d.month in (1, 7) and d.weekday() == 0,
        id="names-month-and-day",
    ),
    # day-of-month and day-of-week both restricted: either one matching fires (Vixie cron)
    pytest.param("0 0 13 * FRI", "UTC", [clock(0)], lambda d: d.day == 13 or d.weekday() == 4, id="13th-or-friday"),
    pytest.param(
        "30 6 1 * SUN", "America/New_York", [clock(6, 30)], lambda d: d.day == 1 or d.weekday() == 6, id="1st-or-sunday"
    ),
    pytest.param("0 0 29 2 *", "UTC", [clock(0)], lambda d: (d.month, d.day) == (2, 29), id="leap-day"),
]


@pytest.mark.parametrize("expression, zone, times_of_day, day_ok", NEXT_RUN_CASES)
def test_next_run_at_is_the_first_tick_after_now(
    fresh_database_url, workflow_name, tmp_path, expression, zone, times_of_day, day_ok
):
    define(workflow_name, tmp_path / "side.txt")
    tz = ZoneInfo(zone)
    with quiet_runner(fresh_database_url) as runner:
        before = utc_now()
        schedule_id = runner.register_cron_workflow(workflow_name, expression, zone)
        after = utc_now()
        schedule = runner.get_cron_schedule(schedule_id)
    assert_schedule(schedule, schedule_id=schedule_id, workflow=workflow_name, expression=expression, tz=zone)
    got = assert_next_run_at(schedule, before, after, tz, times_of_day, day_ok or (lambda d: True))
    assert got.microsecond == 0


DST_ZONES = ("America/New_York", "Europe/Berlin", "Australia/Sydney")


@pytest.mark.parametrize("kind", ["gap", "overlap"])
def test_a_daily_tick_on_the_day_clocks_change(fresh_database_url, workflow_name, tmp_path, kind):
    """A tick at a wall time the clocks skip runs at the first instant after the gap;
    one at a wall time they pass twice runs at the first occurrence.

    The expression names the month and day of the next change ("30 2 8 3 *"), so
    next_run_at falls on that day whatever today is, unless the same date comes
    earlier in the current year (a few days a year for one zone; the zones have
    disjoint such windows, so at least one of them checks the change day)."""
    define(workflow_name, tmp_path / "side.txt")
    checked = []
    with quiet_runner(fresh_database_url) as runner:
        for zone in DST_ZONES:
            tz = ZoneInfo(zone)
            change, old, new = next_transition(tz, utc_now() + timedelta(days=1), kind)
            if kind == "gap":  # half an hour into the skipped hour
                wall = (change - SECOND).astimezone(tz).replace(tzinfo=None) + SECOND
            else:  # half an hour into the repeated hour
                wall = change.astimezone(tz).replace(tzinfo=None)
            wall += timedelta(minutes=30)
            expression = f"{wall.minute} {wall.hour} {wall.day} {wall.month} *"
            before = utc_now()
            schedule_id = runner.register_cron_workflow(workflow_name, expression, zone)
            after = utc_now()
            schedule = runner.get_cron_schedule(schedule_id)
            got = assert_next_run_at(
                schedule, before, after, tz, [wall.time()], lambda d, w=wall: (d.month, d.day) == (w.month, w.day)
            )
            local = got.astimezone(tz)
            if local.date() != wall.date():
                continue  # the same date comes first this year (checked above all the same)
            checked.append(zone)
            if kind == "gap":
                assert got == change, (zone, expression, local)
                assert local.replace(tzinfo=None) == change.astimezone(tz).replace(tzinfo=None)
                assert local.utcoffset() == new
            else:
                assert local.replace(tzinfo=None) == wall, (zone, expression, local)
                assert local.utcoffset() == old, f"{zone}: not the first {wall.time()}: {local}"
    assert checked, "no zone's next_run_at fell on its clock-change day"


# =========================================================================== bad input


@pytest.fixture
def cron_db(fresh_database_url, workflow_name, tmp_path):
    """A runner (firing nothing) on a database holding one schedule; the bad calls
    below must leave that state exactly as it is."""
    define(workflow_name, tmp_path / "side.txt")
    with quiet_runner(fresh_database_url) as runner:
        schedule_id = runner.register_cron_workflow(workflow_name, "0 3 * * *", "Europe/Berlin")
        state = SimpleNamespace(
            runner=runner, schedule_id=schedule_id, workflow=workflow_name, unknown_id=str(uuid.uuid4())
        )
        state.before = runner.list_cron_schedules()
        yield state


def assert_unchanged(state):
    assert state.runner.list_cron_schedules() == state.before, "a refused call changed a schedule"
    assert state.runner.get_cron_schedule(state.schedule_id) == state.before[0]


BAD_EXPRESSIONS = [
    pytest.param("* * * *", id="four-fields"),
    pytest.param("* * * * * * *", id="seven-fields"),
    pytest.param("61 * * * *", id="minute-61"),
    pytest.param("0 24 * * *", id="hour-24"),
    pytest.param("0 0 32 * *", id="day-32"),
    pytest.param("0 0 * 13 *", id="month-13"),
    pytest.param("0 0 * * 8", id="weekday-8"),
    pytest.param("60 * * * * *", id="second-60"),
    pytest.param("every day at noon", id="garbage"),
    pytest.param("@fortnightly", id="unknown-nickname"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
    pytest.param("0 0 30 2 *", id="never-february-30"),
    pytest.param("0 0 31 4,6,9,11 *", id="never-31st-of-short-months"),
]
BAD_TIMEZONES = ["Mars/Olympus", "", "utc+1", "Europe/Berln", "+02:00"]


@pytest.mark.parametrize("expression", BAD_EXPRESSIONS)
def test_an_invalid_expression_is_refused_naming_it(cron_db, expression):
    with pytest.raises(ValueError) as error:
        cron_db.runner.register_cron_workflow(cron_db.workflow, expression)
    assert names(str(error.value), expression), str(error.value)
    with pytest.raises(ValueError) as error:
        cron_db.runner.update_cron_schedule(cron_db.schedule_id, expression)
    assert names(str(error.value), expression), str(error.value)
    assert_unchanged(cron_db)


@pytest.mark.parametrize("zone", BAD_TIMEZONES)
def test_an_invalid_time_zone_is_refused_naming_it(cron_db, zone):
    with pytest.raises(ValueError) as error:
        cron_db.runner.register_cron_workflow(cron_db.workflow, "0 3 * * *", zone)
    assert names(str(error.value), zone), str(error.value)
    with pytest.raises(ValueError) as error:
        cron_db.runner.update_cron_schedule(cron_db.schedule_id, "0 4 * * *", zone)
    assert names(str(error.value), zone), str(error.value)
    assert_unchanged(cron_db)


def test_an_unregistered_workflow_is_refused_naming_it(cron_db):
    missing = f"{cron_db.workflow}_not_registered"
    with pytest.raises(ValueError) as error:
        cron_db.runner.register_cron_workflow(missing, "0 3 * * *")
    assert missing in str(error.value)
    assert_unchanged(cron_db)


UNKNOWN_ID_CALLS = {
    "get": lambda r, sid: r.get_cron_schedule(sid),
    "update": lambda r, sid: r.update_cron_schedule(sid, "0 4 * * *"),
    "update-with-timezone": lambda r, sid: r.update_cron_schedule(sid, "0 4 * * *", "UTC"),
    "disable": lambda r, sid: r.set_cron_schedule_enabled(sid, False),
    "enable": lambda r, sid: r.set_cron_schedule_enabled(sid, True),
    "delete": lambda r, sid: r.delete_cron_schedule(sid),
    "history": lambda r, sid: r.get_cron_execution_history(sid),
}


@pytest.mark.parametrize("call", UNKNOWN_ID_CALLS.values(), ids=UNKNOWN_ID_CALLS.keys())
def test_an_unknown_schedule_id_is_a_key_error_naming_it(cron_db, call):
    with pytest.raises(KeyError) as error:
        call(cron_db.runner, cron_db.unknown_id)
    assert cron_db.unknown_id in str(error.value)
    assert_unchanged(cron_db)


# (call, the wrong value, the parameter): the message names the parameter or the value's type
WRONG_TYPES = {
    "register-name": (lambda s: s.runner.register_cron_workflow(123, "0 3 * * *"), 123, "workflow_name"),
    "register-expression": (lambda s: s.runner.register_cron_workflow(s.workflow, 5), 5, "cron_expression"),
    "register-expression-list": (
        lambda s: s.runner.register_cron_workflow(s.workflow, ["0", "3", "*", "*", "*"]),
        ["0"],
        "cron_expression",
    ),
    "register-timezone": (lambda s: s.runner.register_cron_workflow(s.workflow, "0 3 * * *", 1), 1, "timezone"),
    "get-id": (lambda s: s.runner.get_cron_schedule(123), 123, "id"),
    "update-expression": (lambda s: s.runner.update_cron_schedule(s.schedule_id, 5), 5, "cron_expression"),
    "update-timezone": (lambda s: s.runner.update_cron_schedule(s.schedule_id, "0 4 * * *", 2), 2, "timezone"),
    "enabled-int": (lambda s: s.runner.set_cron_schedule_enabled(s.schedule_id, 1), 1, "enabled"),
    "enabled-str": (lambda s: s.runner.set_cron_schedule_enabled(s.schedule_id, "false"), "false", "enabled"),
    "enabled-none": (lambda s: s.runner.set_cron_schedule_enabled(s.schedule_id, None), None, "enabled"),
    "delete-id": (lambda s: s.runner.delete_cron_schedule(uuid.UUID(s.schedule_id)), uuid.UUID(int=0), "id"),
    "history-id": (lambda s: s.runner.get_cron_execution_history(123), 123, "id"),
    "history-limit": (lambda s: s.runner.get_cron_execution_history(s.schedule_id, limit="5"), "5", "limit"),
    "list-limit": (lambda s: s.runner.list_cron_schedules(limit="10"), "10", "limit"),
    "list-enabled-only": (lambda s: s.runner.list_cron_schedules(enabled_only="yes"), "yes", "enabled_only"),
    "stats-int": (lambda s: s.runner.get_cron_execution_stats(12345), 12345, "since"),
    "stats-none": (lambda s: s.runner.get_cron_execution_stats(None), None, "since"),
}


@pytest.mark.parametrize("call, value, parameter", WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_a_wrongly_typed_argument_is_a_type_error(cron_db, call, value, parameter):
    with pytest.raises(TypeError) as error:
        call(cron_db)
    message = str(error.value)
    assert parameter in message or type(value).__name__ in message, message
    assert_unchanged(cron_db)


BAD_PAGES = {
    "list-limit-0": (lambda s: s.runner.list_cron_schedules(limit=0), "limit", 0),
    "list-limit-negative": (lambda s: s.runner.list_cron_schedules(limit=-5), "limit", -5),
    "list-offset-negative": (lambda s: s.runner.list_cron_schedules(offset=-1), "offset", -1),
    "history-limit-0": (lambda s: s.runner.get_cron_execution_history(s.schedule_id, limit=0), "limit", 0),
    "history-offset-negative": (lambda s: s.runner.get_cron_execution_history(s.schedule_id, offset=-2), "offset", -2),
}


@pytest.mark.parametrize("call, parameter, value", BAD_PAGES.values(), ids=BAD_PAGES.keys())
def test_a_bad_limit_or_offset_is_a_value_error_naming_it(cron_db, call, parameter, value):
    with pytest.raises(ValueError) as error:
        call(cron_db)
    message = str(error.value)
    assert parameter in message and str(value) in message, message
    assert_unchanged(cron_db)


@pytest.mark.parametrize(
    "since",
    ["yesterday", "", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00"],
    ids=["words", "empty", "month-13", "no-offset"],
)
def test_a_bad_since_is_a_value_error_naming_it(cron_db, since):
    with pytest.raises(ValueError) as error:
        cron_db.runner.get_cron_execution_stats(since)
    assert names(str(error.value), since) or (since and since in str(error.value)), str(error.value)
    assert_unchanged(cron_db)


# =========================================================================== ticks


def test_ticks_start_executions_with_the_schedule_in_their_input(
    side, fresh_database_url, workflow_name, tmp_path, wait_until
):
    define(workflow_name, side)
    with ticking_runner(fresh_database_url) as runner:
        before = utc_now()
        schedule_id = runner.register_cron_workflow(workflow_name, "* * * * * *")
        after = utc_now()
        wait_until(
            lambda: sum(r["status"] == "Completed" for r in history(runner, schedule_id)) >= 3,
            WAIT,
            "three ticks to complete",
        )
        rows = settle(runner, schedule_id, wait_until)
        schedule = runner.get_cron_schedule(schedule_id)
        results = {row["execution_id"]: runner.get_execution(row["execution_id"]) for row in rows}
        executions = runner.list_executions(workflow_name=workflow_name, limit=1000)
        since = whole(before)
        stats = runner.get_cron_execution_stats(since.isoformat())
        stats_forms = [
            runner.get_cron_execution_stats(since.strftime("%Y-%m-%dT%H:%M:%SZ")),
            runner.get_cron_execution_stats(since.astimezone(timezone(timedelta(hours=2))).isoformat()),
            runner.get_cron_execution_stats(since),
            runner.get_cron_execution_stats(since.replace(tzinfo=None)),  # naive = UTC
        ]
        times = scheduled_times(rows)
        newest_two = runner.get_cron_execution_stats(times[1])
        none_yet = runner.get_cron_execution_stats(times[0] + SECOND)

    for row in rows:
        assert_history_row(row, schedule_id=schedule_id, workflow=workflow_name)
        assert row["attempt"] == 1 and row["status"] == "Completed", row
    assert times == sorted(times, reverse=True), "history is not newest first"
    assert len(set(times)) == len(times), f"a tick fired twice: {times}"
    assert_consecutive(times)
    # the first tick is the first whole second after registering
    assert whole(before) + SECOND <= times[-1] <= whole(after) + SECOND, (before, times[-1], after)

    for row, scheduled in zip(rows, times):
        result = results[row["execution_id"]]
        assert result.status == "Completed", result.error_message
        assert result.execution_id == row["execution_id"]
        final = result.final_context.to_dict()
        assert final["cron_schedule_id"] == final["schedule_id"] == schedule_id
        assert instant(final["cron_scheduled_time"]) == scheduled
        # the original bindings' scheduler keys, on every tick
        assert final["scheduled_time"] == final["cron_scheduled_time"]
        assert (final["schedule_timezone"], final["schedule_expression"]) == ("UTC", "* * * * * *")
        assert final["ran_in"] == os.getpid()
    assert {r.execution_id for r in executions} == set(results), "an execution without a tick"

    done = side_runs(side)
    assert Counter(t for t, _ in done) == Counter(times), "side effects do not match the history"

    assert_schedule(
        schedule, schedule_id=schedule_id, workflow=workflow_name, expression="* * * * * *", tz="UTC", enabled=False
    )
    assert instant(schedule["last_run_at"]) == times[0]
    assert schedule["skipped_ticks"] == 0

    assert_stats(stats, rows)
    assert stats["success_rate"] == 100.0
    assert all(form == stats for form in stats_forms), stats_forms
    assert newest_two["total_executions"] == 2, newest_two
    assert none_yet["total_executions"] == 0 and none_yet["success_rate"] == 0.0, none_yet


def test_failed_runs_show_in_the_history_and_lower_the_success_rate(
    side, fresh_database_url, workflow_name, tmp_path, wait_until
):
    good, bad = f"{workflow_name}_ok", f"{workflow_name}_fails"
    define(good, side)
    define(bad, side, fail=True)
    with ticking_runner(fresh_database_url) as runner:
        since = whole(utc_now())
        good_id = runner.register_cron_workflow(good, "* * * * * *")
        bad_id = runner.register_cron_workflow(bad, "* * * * * *")
        for schedule_id in (good_id, bad_id):
            wait_until(
                # wait_until calls the lambda within this iteration
                lambda: finished_history(runner, schedule_id, at_least=2),  # noqa: B023
                WAIT,
                "two finished ticks of each schedule",
            )
        good_rows = settle(runner, good_id, wait_until)
        bad_rows = settle(runner, bad_id, wait_until)
        failures = [runner.get_execution(row["execution_id"]) for row in bad_rows]
        stats = runner.get_cron_execution_stats(since.isoformat())

    assert [row["status"] for row in good_rows] == ["Completed"] * len(good_rows)
    assert [row["status"] for row in bad_rows] == ["Failed"] * len(bad_rows)
    for row, result in zip(bad_rows, failures):
        assert_history_row(row, schedule_id=bad_id, workflow=bad)
        assert result.status == "Failed"
        assert "failed on purpose" in result.error_message, result.error_message
    assert_stats(stats, good_rows + bad_rows)
    assert stats["failed_executions"] == len(bad_rows) >= 2
    assert 0.0 < stats["success_rate"] < 100.0, stats


def test_disabled_fires_nothing_reenabled_fires_again_deleted_stops(
    side, fresh_database_url, workflow_name, tmp_path, wait_until, db_query
):
    define(workflow_name, side)
    url = fresh_database_url
    with ticking_runner(url) as runner:
        schedule_id = runner.register_cron_workflow(workflow_name, "* * * * * *")
        wait_until(lambda: finished_history(runner, schedule_id, at_least=2), WAIT, "two ticks")

        rows = settle(runner, schedule_id, wait_until)
        assert runner.get_cron_schedule(schedule_id)["enabled"] is False
        time.sleep(2.5)  # two ticks' worth, a dozen poll intervals
        assert history(runner, schedule_id) == rows, "a disabled schedule fired"
        assert len(side_runs(side)) == len(rows)
        last_before = max(scheduled_times(rows))

        reenabled_at = utc_now()
        runner.set_cron_schedule_enabled(schedule_id, True)
        schedule = runner.get_cron_schedule(schedule_id)
        assert schedule["enabled"] is True
        assert instant(schedule["next_run_at"]) >= whole(reenabled_at) + SECOND, "re-enabling must start from now"
        wait_until(
            lambda: finished_history(runner, schedule_id, at_least=len(rows) + 2),
            WAIT,
            "two more ticks after re-enabling",
        )
        rows = settle(runner, schedule_id, wait_until)
        times = scheduled_times(rows)
        new = [t for t in times if t > last_before]
        assert len(new) >= 2
        assert min(new) >= whole(reenabled_at) + SECOND, (
            f"ticks missed while disabled were caught up: {sorted(new)} (re-enabled {reenabled_at})"
        )
        assert_consecutive(new)
        assert runner.get_cron_schedule(schedule_id)["skipped_ticks"] == 0
        assert Counter(t for t, _ in side_runs(side)) == Counter(times)

        # delete while enabled and ticking
        runner.set_cron_schedule_enabled(schedule_id, True)
        wait_until(lambda: len(history(runner, schedule_id)) > len(rows), WAIT, "one more tick")
        runner.delete_cron_schedule(schedule_id)
        with pytest.raises(KeyError) as error:
            runner.get_cron_schedule(schedule_id)
        assert schedule_id in str(error.value)
        with pytest.raises(KeyError):
            runner.get_cron_execution_history(schedule_id)
        assert runner.list_cron_schedules() == []

        def all_executions_finished():
            found = runner.list_executions(workflow_name=workflow_name, limit=1000)
            return found if all(r.status in ("Completed", "Failed") for r in found) else None

        started = wait_until(all_executions_finished, WAIT, "the started executions to finish")
        time.sleep(2.5)
        assert len(runner.list_executions(workflow_name=workflow_name, limit=1000)) == len(started), (
            "a deleted schedule fired"
        )
        assert all(r.status == "Completed" for r in started)
        assert len(side_runs(side)) == len(started)
        assert db_query(url, "SELECT COUNT(*) FROM cloaca_cron_schedules") == [("0",)]
        assert db_query(url, "SELECT COUNT(*) FROM cloaca_cron_executions") == [("0",)], (
            "the history of a deleted schedule is left behind"
        )


def test_an_updated_expression_changes_the_ticks(side, fresh_database_url, workflow_name, tmp_path, wait_until):
    define(workflow_name, side)
    with ticking_runner(fresh_database_url) as runner:
        schedule_id = runner.register_cron_workflow(workflow_name, "* * * * * *")
        wait_until(lambda: len(history(runner, schedule_id)) >= 2, WAIT, "two ticks")
        before = utc_now()
        runner.update_cron_schedule(schedule_id, "*/2 * * * * *")
        after = utc_now()
        schedule = runner.get_cron_schedule(schedule_id)
        next_run = instant(schedule["next_run_at"])
        assert next_run.second % 2 == 0 and whole(before) < next_run <= whole(after) + 2 * SECOND
        wait_until(
            lambda: sum(t > after for t in scheduled_times(history(runner, schedule_id))) >= 2,
            WAIT,
            "two ticks of the new expression",
        )
        rows = settle(runner, schedule_id, wait_until)
    times = scheduled_times(rows)
    later = [t for t in times if t > after]
    assert all(t.second % 2 == 0 for t in later), later
    assert_consecutive(later, step=2 * SECOND)
    assert len(set(times)) == len(times)
    assert all(row["status"] == "Completed" for row in rows)


# =========================================================================== exactly once


def test_each_tick_runs_once_across_a_restart(side, fresh_database_url, workflow_name, tmp_path, wait_until):
    define(workflow_name, side)
    url = fresh_database_url
    with ticking_runner(url) as first:
        schedule_id = first.register_cron_workflow(workflow_name, "* * * * * *")
        wait_until(lambda: len(history(first, schedule_id)) >= 2, WAIT, "ticks in the first runner")
    with quiet_runner(url) as reader:  # fires nothing: what the first runner left
        fired_by_first = history(reader, schedule_id)
    assert len(fired_by_first) >= 2

    with ticking_runner(url) as second:
        wait_until(
            lambda: len(history(second, schedule_id)) >= len(fired_by_first) + 3, WAIT, "ticks in the second runner"
        )
        rows = settle(second, schedule_id, wait_until)
        schedule = second.get_cron_schedule(schedule_id)
        results = [second.get_execution(row["execution_id"]) for row in rows]

    times = scheduled_times(rows)
    assert len(set(times)) == len(times), f"a tick fired twice: {sorted(times)}"
    assert_consecutive(times)  # the ticks due while no runner was up were caught up
    assert schedule["skipped_ticks"] == 0
    by_time = {(row["scheduled_time"], row["execution_id"]) for row in rows}
    assert {(row["scheduled_time"], row["execution_id"]) for row in fired_by_first} <= by_time
    assert all(row["attempt"] == 1 and row["status"] == "Completed" for row in rows), rows
    assert all(result.status == "Completed" for result in results)
    done = Counter(t for t, _ in side_runs(side))
    assert done == Counter(times), "the task did not run exactly once per tick"


@pytest.mark.parametrize("max_catchup", [2, 10])
def test_ticks_missed_while_no_runner_was_up_are_caught_up(
    side, fresh_database_url, workflow_name, tmp_path, wait_until, max_catchup
):
    """A schedule with four ticks a day, all within the next few seconds, registered
    by a runner that fires nothing; a ticking runner opened after the four have
    passed runs all of them, or only the most recent `max_catchup`."""
    define(workflow_name, side)
    url = fresh_database_url
    with quiet_runner(url) as first:
        ticks = planned_ticks(4)
        schedule_id = first.register_cron_workflow(workflow_name, cron_worker.daily_expression(ticks))
        registered = first.get_cron_schedule(schedule_id)
    assert instant(registered["next_run_at"]) == ticks[0], (registered, ticks)

    sleep_until(ticks[-1] + timedelta(seconds=0.5))
    expected = ticks[-max_catchup:]
    with ticking_runner(url, cron_max_catchup_executions=max_catchup) as second:
        wait_until(
            lambda: finished_history(second, schedule_id, at_least=len(expected)),
            WAIT,
            "the catch-up executions to finish",
        )
        time.sleep(1.0)  # five poll intervals: nothing more is fired
        rows = history(second, schedule_id)
        schedule = second.get_cron_schedule(schedule_id)
        stats = second.get_cron_execution_stats(ticks[0])

    assert sorted(scheduled_times(rows)) == expected, rows
    assert all(row["attempt"] == 1 and row["status"] == "Completed" for row in rows), rows
    assert schedule["skipped_ticks"] == len(ticks) - len(expected)
    assert instant(schedule["last_run_at"]) == ticks[-1]
    assert instant(schedule["next_run_at"]) == ticks[0] + timedelta(days=1)
    assert sorted(t for t, _ in side_runs(side)) == expected
    assert_stats(stats, rows)


def test_catch_up_limit_with_a_schedule_that_keeps_ticking(
    side, fresh_database_url, workflow_name, tmp_path, wait_until
):
    define(workflow_name, side)
    url = fresh_database_url
    with quiet_runner(url) as first:
        schedule_id = first.register_cron_workflow(workflow_name, "* * * * * *")
        first_due = instant(first.get_cron_schedule(schedule_id)["next_run_at"])
    time.sleep(4)  # downtime: about four ticks come due with no runner firing them
    with ticking_runner(url, cron_max_catchup_executions=2) as second:
        wait_until(lambda: len(history(second, schedule_id)) >= 5, WAIT, "catch-up and new ticks")
        rows = settle(second, schedule_id, wait_until)
        schedule = second.get_cron_schedule(schedule_id)

    times = sorted(scheduled_times(rows))
    assert len(set(times)) == len(times)
    assert_consecutive(times)
    skipped = schedule["skipped_ticks"]
    assert skipped >= 1, schedule
    # history and skipped ticks together cover every tick since the first one due
    assert times[0] == first_due + skipped * SECOND, (first_due, skipped, times[0])
    # the catch-up pass: the earliest firing, which started exactly the two most recent due ticks
    claimed = [instant(row["claimed_at"], utc=False) for row in rows]
    catch_up_at = min(claimed)
    catch_up = sorted(instant(r["scheduled_time"]) for r, c in zip(rows, claimed) if c == catch_up_at)
    assert catch_up == times[:2], (catch_up, times)
    missed = int((whole(catch_up_at) - first_due).total_seconds()) + 1
    assert abs(skipped - (missed - 2)) <= 1, (skipped, missed)
    assert all(row["status"] == "Completed" for row in rows)
    assert Counter(t for t, _ in side_runs(side)) == Counter(times)


def test_three_processes_fire_each_tick_once(
    backend, fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until
):
    if backend != "postgres":
        pytest.skip("runner processes sharing one database to fire ticks is a postgres setup")
    side, schedule_file, stop = tmp_path / "side.txt", tmp_path / "schedule-id", tmp_path / "stop"
    side.touch()
    common = [
        "--url",
        fresh_database_url,
        "--workflow",
        workflow_name,
        "--side-file",
        side,
        "--stop-file",
        stop,
        "--seconds",
        180,
    ]
    workers = []
    for n in range(3):
        ready = tmp_path / f"ready-{n}"
        register = ["--register", "* * * * * *", "--schedule-file", schedule_file] if n == 2 else []
        proc = run_scenario.start("cron_worker.py", *common, "--ready-file", ready, *register)
        wait_until(ready.exists, 120, f"runner process {n} to open its runner", proc=proc)
        workers.append(proc)
    schedule_id = schedule_file.read_text().strip()

    # The test process reads and disables; it has the workflow not registered, so
    # it neither fires ticks nor runs their tasks.
    with quiet_runner(fresh_database_url) as reader:
        wait_until(lambda: len(history(reader, schedule_id)) >= 6, WAIT, "ticks of the processes")
        assert all(proc.poll() is None for proc in workers), [p.output() for p in workers]
        rows = settle(reader, schedule_id, wait_until)
        results = [reader.get_execution(row["execution_id"]) for row in rows]
    stop.touch()
    for proc in workers:
        assert proc.wait(timeout=60) == 0, proc.output()

    times = scheduled_times(rows)
    duplicated = [t for t, n in Counter(times).items() if n > 1]
    assert not duplicated, f"ticks fired more than once: {duplicated}"
    assert_consecutive(times)
    assert all(row["attempt"] == 1 and row["status"] == "Completed" for row in rows), rows
    assert all(result.status == "Completed" for result in results)
    done = side_runs(side)
    assert Counter(t for t, _ in done) == Counter(times), "a tick's task ran other than once"
    assert {pid for _, pid in done} <= {proc.pid for proc in workers}
    assert Counter(side_runs(side, "start")) == Counter(done)


# =========================================================================== lost executions


def recovery_config(**overrides):
    """A runner that does not take over expired leases but recovers lost cron executions fast."""
    return {
        "enable_recovery": False,
        "task_lease_seconds": 1,
        "cron_poll_interval_seconds": POLL,
        "cron_enable_recovery": True,
        "cron_recovery_interval_seconds": 0.2,
        "cron_lost_threshold_minutes": LOST_MINUTES,
        "cron_max_recovery_attempts": 1,
        **overrides,
    }


def config_args(config):
    return [arg for name, value in config.items() for arg in ("--config", f"{name}={json.dumps(value)}")]


def start_blocked_tick(run_scenario, wait_until, crash, name, *extra):
    """Start a cron_worker process; wait until a tick's task started in it (and blocks)."""
    ready = crash.tmp_path / f"ready-{name}"
    proc = run_scenario.start(
        "cron_worker.py",
        "--url",
        crash.url,
        "--workflow",
        crash.workflow,
        "--side-file",
        crash.side,
        "--block-marker",
        crash.marker,
        "--ready-file",
        ready,
        "--seconds",
        600,
        *extra,
    )
    started = wait_until(
        lambda: side_runs(crash.side, "start", proc.pid),
        120,
        f"a tick's task to start in runner process {name}",
        proc=proc,
    )
    return proc, started


def kill(proc):
    proc.kill()  # SIGKILL: no shutdown, the lease of the blocked task is left to expire
    proc.wait(timeout=30)
    assert proc.returncode == -9, proc.output()


@pytest.fixture
def crashed_tick(fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until):
    """A tick whose execution's runner process was SIGKILLed while its task ran.

    The process registered a daily schedule whose one tick today is two seconds
    after registering (so nothing else fires and nothing is left to catch up),
    ran the tick's task, which blocks while the marker file exists, and was
    killed. Task leases are 1 s. The workflow is also registered in this process
    (same version), with the same side-effect file and marker.
    """
    return crash_a_tick(fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until)


def crash_a_tick(fresh_database_url, workflow_name, tmp_path, run_scenario, wait_until, *register):
    """The crashed_tick fixture's work; `register` adds cron_worker.py arguments
    (such as --instance and --params)."""
    crash = SimpleNamespace(
        url=fresh_database_url,
        workflow=workflow_name,
        tmp_path=tmp_path,
        side=tmp_path / "side.txt",
        marker=tmp_path / "block",
    )
    crash.side.touch()
    crash.marker.touch()
    schedule_file = tmp_path / "schedule-id"
    first, started = start_blocked_tick(
        run_scenario,
        wait_until,
        crash,
        "first",
        "--register-once-after",
        2,
        "--schedule-file",
        schedule_file,
        *register,
        *config_args({"task_lease_seconds": 1, "cron_poll_interval_seconds": POLL}),
    )
    kill(first)
    assert len(started) == 1, started
    crash.scheduled = started[0][0]
    crash.first_pid = first.pid
    crash.schedule_id = schedule_file.read_text().strip()
    define(workflow_name, crash.side, crash.marker)
    return crash


def assert_lost(runner, row):
    """A Lost history row: its execution was failed, saying it was lost."""
    assert row["status"] == "Lost", row
    result = runner.get_execution(row["execution_id"])
    assert result.status == "Failed", result.status
    assert "lost" in (result.error_message or "").lower(), result.error_message
    assert result.end_time is not None


@pytest.mark.parametrize("too_old", [False, True], ids=["started-again", "too-old-to-start-again"])
def test_a_lost_cron_execution_is_failed_and_its_tick_started_again(crashed_tick, wait_until, too_old):
    crash = crashed_tick
    crash.marker.unlink()  # a run started again does not block
    config = recovery_config()
    if too_old:  # the tick is at least 1.8 s old by the time its execution counts as lost
        config["cron_max_recovery_age_seconds"] = 1
    with runner_on(crash.url, **config) as runner:
        lost = wait_until(
            lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 1, "Lost"),
            WAIT,
            "the interrupted execution to be lost",
        )
        assert_lost(runner, lost)
        if not too_old:
            again = wait_until(
                lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 2, "Completed"),
                WAIT,
                "the tick's second attempt to complete",
            )
            result = runner.get_execution(again["execution_id"])
            assert again["execution_id"] != lost["execution_id"]
            assert result.status == "Completed", result.error_message
            final = result.final_context.to_dict()
            assert final["cron_schedule_id"] == crash.schedule_id
            assert instant(final["cron_scheduled_time"]) == crash.scheduled
        time.sleep(2.0)  # ten recovery intervals: nothing more happens
        rows = history(runner, crash.schedule_id)
        stats = runner.get_cron_execution_stats(crash.scheduled)

    for row in rows:
        assert_history_row(row, schedule_id=crash.schedule_id, workflow=crash.workflow)
    attempts = [1] if too_old else [1, 2]
    assert sorted((instant(r["scheduled_time"]), r["attempt"]) for r in rows) == [
        (crash.scheduled, a) for a in attempts
    ], rows
    assert_stats(stats, rows)
    assert stats["lost_executions"] == 1
    me = os.getpid()
    assert side_runs(crash.side, "start") == [(crash.scheduled, crash.first_pid)] + (
        [] if too_old else [(crash.scheduled, me)]
    )
    assert side_runs(crash.side, "done") == ([] if too_old else [(crash.scheduled, me)])


@pytest.mark.parametrize("max_attempts", [1, 2])
def test_max_recovery_attempts_bounds_how_often_a_tick_is_started_again(
    crashed_tick, run_scenario, wait_until, max_attempts
):
    """Attempt 1 is lost (its process was killed); a second process, recovering,
    starts attempt 2, which blocks too, and is killed in turn. A third runner
    (this process) finds attempt 2 lost as well: with cron_max_recovery_attempts=1
    the tick was already started again once, so it stays lost; with 2 it runs
    a third time."""
    crash = crashed_tick
    config = recovery_config(cron_max_recovery_attempts=max_attempts)
    second, started = start_blocked_tick(run_scenario, wait_until, crash, "second", *config_args(config))
    kill(second)
    assert started == [(crash.scheduled, second.pid)], started
    crash.marker.unlink()

    with runner_on(crash.url, **config) as runner:
        first_lost = find_row(history(runner, crash.schedule_id), crash.scheduled, 1)
        assert_lost(runner, first_lost)
        second_lost = wait_until(
            lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 2, "Lost"),
            WAIT,
            "attempt 2 to be lost",
        )
        assert_lost(runner, second_lost)
        if max_attempts == 2:
            wait_until(
                lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 3, "Completed"),
                WAIT,
                "attempt 3 to complete",
            )
        time.sleep(2.0)  # ten recovery intervals
        rows = history(runner, crash.schedule_id)
        stats = runner.get_cron_execution_stats(crash.scheduled)

    expected = [(1, "Lost"), (2, "Lost")] + ([(3, "Completed")] if max_attempts == 2 else [])
    assert sorted((r["attempt"], r["status"]) for r in rows) == expected, rows
    assert {instant(r["scheduled_time"]) for r in rows} == {crash.scheduled}
    assert_stats(stats, rows)
    assert stats["lost_executions"] == 2
    me = os.getpid()
    ran_here = [(crash.scheduled, me)] if max_attempts == 2 else []
    assert side_runs(crash.side, "start") == [
        (crash.scheduled, crash.first_pid),
        (crash.scheduled, second.pid),
        *ran_here,
    ]
    assert side_runs(crash.side, "done") == ran_here


def test_a_crashed_tick_resumed_by_lease_recovery_is_not_lost(crashed_tick, wait_until):
    """With enable_recovery on, the expired lease of the killed task is taken over
    and the same execution finishes: task-level recovery, nothing is lost."""
    crash = crashed_tick
    crash.marker.unlink()
    config = recovery_config(enable_recovery=True, cron_lost_threshold_minutes=1.0)
    with runner_on(crash.url, **config) as runner:
        row = wait_until(
            lambda: find_row(history(runner, crash.schedule_id), crash.scheduled, 1, "Completed"),
            WAIT,
            "the interrupted execution to finish",
        )
        time.sleep(1.0)
        rows = history(runner, crash.schedule_id)
        stats = runner.get_cron_execution_stats(crash.scheduled)
    assert [(r["attempt"], r["status"], r["execution_id"]) for r in rows] == [(1, "Completed", row["execution_id"])], (
        rows
    )
    assert_stats(stats, rows)
    assert stats["lost_executions"] == 0 and stats["success_rate"] == 100.0
    me = os.getpid()
    assert side_runs(crash.side, "start") == [(crash.scheduled, crash.first_pid), (crash.scheduled, me)]
    assert side_runs(crash.side, "done") == [(crash.scheduled, me)]
