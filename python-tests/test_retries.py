"""Retries, backoff, retry conditions and task timeouts.

Attempts are counted twice: by the task itself (it logs a monotonic timestamp per
run) and by the stored task row (attempt = runs started, failures = failed runs,
max_attempts = retry_attempts + 1). Backoff is checked with lower bounds on the
gaps between attempts only: a loaded machine may always be slower, never faster.
Delays are kept small (tens of milliseconds) and jitter is off unless tested.
"""

import threading
import time

import pytest

import cloaca

WAIT = 90  # seconds: only to keep a broken engine from hanging the suite
#: Slack for lower bounds: the engine keeps times in whole milliseconds.
TOLERANCE = 0.005


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def task_row(db_query, url, execution_id, task_id):
    columns = ("status", "attempt", "failures", "max_attempts", "error_type", "error_message")
    rows = db_query(
        url,
        f"SELECT {', '.join(columns)} FROM cloaca_task_executions WHERE "
        f"execution_id = {sql_str(execution_id)} AND task_id = {sql_str(task_id)}",
    )
    assert len(rows) == 1, rows
    return dict(zip(columns, rows[0]))


def gaps(times):
    return [later - earlier for earlier, later in zip(times, times[1:])]


def assert_gaps_at_least(times, expected_ms):
    """Every gap between consecutive attempt starts is at least the expected delay."""
    measured = gaps(times)
    assert len(measured) == len(expected_ms), (measured, expected_ms)
    for i, (gap, delay_ms) in enumerate(zip(measured, expected_ms), start=1):
        assert gap >= delay_ms / 1000 - TOLERANCE, (
            f"retry {i} started {gap * 1000:.1f} ms after the previous attempt, "
            f"before its backoff of {delay_ms} ms; all gaps (ms): "
            f"{[round(g * 1000, 1) for g in measured]}"
        )


def define_flaky(name, attempts, make_error, fail_first=None, **task_options):
    """One task, "flaky", that logs each attempt and raises make_error(n) on attempt n
    while n <= fail_first (always when fail_first is None); then it succeeds."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task(id="flaky", **task_options)
        def flaky(ctx):
            attempts.append(time.monotonic())
            n = len(attempts)
            if fail_first is None or n <= fail_first:
                ctx.set("partial_from_attempt", n)  # must not leak into later attempts
                raise make_error(n)
            ctx.set("succeeded_on", n)
            return ctx


@pytest.fixture
def runner(database_url):
    config = cloaca.DefaultRunnerConfig(executor_poll_interval_ms=10)
    with cloaca.DefaultRunner.with_config(database_url, config) as r:
        yield r


class TestBackoff:
    def test_success_on_a_later_attempt_completes(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError(f"attempt {n} failed"),
            fail_first=2,
            retry_attempts=3,
            retry_backoff="fixed",
            retry_delay_ms=20,
            retry_jitter=False,
        )

        result = runner.execute(workflow_name, {"in": 1})

        assert result.status == "Completed", result.error_message
        assert result.error_message is None
        assert len(attempts) == 3
        # each attempt starts from the task's input, not from a failed attempt's changes
        assert result.final_context.to_dict() == {"in": 1, "succeeded_on": 3}
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert row["status"] == "completed"
        assert (row["attempt"], row["failures"], row["max_attempts"]) == ("3", "2", "4")

    def test_no_retries_by_default(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("once only"))

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 1
        assert result.error_message.startswith("Task 'flaky' failed after 1 attempt(s): RuntimeError: once only")
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["status"], row["attempt"], row["failures"], row["max_attempts"]) == ("failed", "1", "1", "1")

    def test_fixed_backoff(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError(f"fixed {n}"),
            retry_attempts=3,
            retry_backoff="fixed",
            retry_delay_ms=30,
            retry_jitter=False,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 4  # retry_attempts retries + the first run
        assert result.error_message.startswith("Task 'flaky' failed after 4 attempt(s): RuntimeError: fixed 4"), (
            result.error_message
        )
        assert "Traceback" in result.error_message
        assert_gaps_at_least(attempts, [30, 30, 30])
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["status"], row["attempt"], row["failures"], row["max_attempts"]) == ("failed", "4", "4", "4")
        assert row["error_type"] == "RuntimeError"
        assert "fixed 4" in row["error_message"]

    def test_linear_backoff(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError(f"linear {n}"),
            retry_attempts=3,
            retry_backoff="linear",
            retry_delay_ms=30,
            retry_jitter=False,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 4
        assert "failed after 4 attempt(s)" in result.error_message
        assert_gaps_at_least(attempts, [30, 60, 90])
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["attempt"], row["failures"]) == ("4", "4")

    def test_exponential_backoff(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError(f"exp {n}"),
            retry_attempts=3,
            retry_backoff="exponential",
            retry_delay_ms=50,
            retry_jitter=False,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 4
        assert "failed after 4 attempt(s)" in result.error_message
        assert_gaps_at_least(attempts, [50, 100, 200])
        measured = gaps(attempts)
        assert measured == sorted(measured), f"gaps shrank: {measured}"
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["attempt"], row["failures"], row["max_attempts"]) == ("4", "4", "4")

    def test_default_backoff_is_exponential(self, runner, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError("default backoff"),
            fail_first=2,
            retry_attempts=2,
            retry_delay_ms=40,
            retry_jitter=False,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Completed", result.error_message
        assert len(attempts) == 3
        assert_gaps_at_least(attempts, [40, 80])

    def test_jitter_waits_at_least_half_the_delay(self, runner, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: RuntimeError("jittered"),
            fail_first=3,
            retry_attempts=3,
            retry_backoff="fixed",
            retry_delay_ms=60,
            retry_jitter=True,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Completed", result.error_message
        assert len(attempts) == 4
        assert_gaps_at_least(attempts, [30, 30, 30])

    def test_max_delay_caps_exponential_backoff(self, runner, database_url, db_query, workflow_name):
        """delay 40 ms doubling over 12 retries would wait 40 * (2**12 - 1) ms, about
        164 s, in all; capped at 60 ms it is under a second. The wait's timeout (a hang
        guard) lies far between the two, so a missing cap fails the test."""
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: ConnectionError(f"capped {n}"),
            retry_attempts=12,
            retry_backoff="exponential",
            retry_delay_ms=40,
            retry_max_delay_ms=60,
            retry_jitter=False,
        )

        handle = runner.execute_async(workflow_name)
        try:
            result = handle.wait(timeout=WAIT)
        except TimeoutError:
            pytest.fail(
                f"13 attempts with backoff capped at 60 ms had not finished after "
                f"{WAIT} s ({len(attempts)} attempts so far): retry_max_delay_ms "
                "is not applied"
            )

        assert result.status == "Failed"
        assert len(attempts) == 13
        assert "failed after 13 attempt(s)" in result.error_message
        assert_gaps_at_least(attempts, [40] + [60] * 11)
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["attempt"], row["failures"], row["max_attempts"]) == ("13", "13", "13")


class TestRetryConditions:
    def test_never_runs_once(self, runner, database_url, db_query, workflow_name):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: ConnectionError("not retried"),
            retry_attempts=3,
            retry_condition="never",
            retry_delay_ms=20,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 1
        assert result.error_message.startswith("Task 'flaky' failed after 1 attempt(s): ConnectionError: not retried")
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["status"], row["attempt"], row["failures"]) == ("failed", "1", "1")

    @pytest.mark.parametrize(
        "error",
        [ConnectionError, ConnectionResetError, TimeoutError, OSError, FileNotFoundError],
        ids=lambda e: e.__name__,
    )
    def test_transient_only_retries_transient_errors(self, runner, database_url, db_query, workflow_name, error):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: error(f"transient {n}"),
            fail_first=2,
            retry_attempts=2,
            retry_condition="transient_only",
            retry_delay_ms=20,
            retry_backoff="fixed",
        )

        result = runner.execute(workflow_name)

        assert result.status == "Completed", result.error_message
        assert len(attempts) == 3
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["attempt"], row["failures"]) == ("3", "2")

    @pytest.mark.parametrize("error", [ValueError, KeyError, RuntimeError, TypeError], ids=lambda e: e.__name__)
    def test_transient_only_does_not_retry_other_errors(self, runner, database_url, db_query, workflow_name, error):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: error("permanent"),
            retry_attempts=2,
            retry_condition="transient_only",
            retry_delay_ms=20,
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 1
        assert f"failed after 1 attempt(s): {error.__name__}" in result.error_message
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert (row["attempt"], row["failures"]) == ("1", "1")

    @pytest.mark.parametrize(
        "pattern, error, retried",
        [
            ("flaky", RuntimeError("flaky backend"), True),
            ("flaky", RuntimeError("fatal error"), False),
            ("KeyError", KeyError("k"), True),
            ("KeyError", ValueError("bad value"), False),
            ("ValueError: retry me", ValueError("retry me please"), True),
            ("ValueError: retry me", RuntimeError("retry me please"), False),
        ],
        ids=[
            "message-match",
            "message-miss",
            "type-match",
            "type-miss",
            "type-and-message-match",
            "type-and-message-miss",
        ],
    )
    def test_substring_pattern(self, runner, database_url, db_query, workflow_name, pattern, error, retried):
        """The pattern is looked for in "ExcType: message"."""
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: type(error)(*error.args),
            fail_first=1,
            retry_attempts=2,
            retry_condition=pattern,
            retry_delay_ms=20,
        )

        result = runner.execute(workflow_name)

        if retried:
            assert result.status == "Completed", result.error_message
            assert len(attempts) == 2
        else:
            assert result.status == "Failed"
            assert len(attempts) == 1
            assert type(error).__name__ in result.error_message
        row = task_row(db_query, database_url, result.execution_id, "flaky")
        assert row["attempt"] == ("2" if retried else "1")
        assert row["failures"] == "1"


class TestTimeouts:
    @staticmethod
    def define_blocking(name, attempts, gate, blocking_attempts, **task_options):
        """One task, "sleeper": attempts up to `blocking_attempts` block on `gate`
        (released by the test at the end, so no thread outlives it); later ones return."""
        with cloaca.WorkflowBuilder(name):

            @cloaca.task(id="sleeper", **task_options)
            def sleeper(ctx):
                attempts.append(time.monotonic())
                if len(attempts) <= blocking_attempts:
                    gate.wait(WAIT)
                ctx.set("finished_attempt", len(attempts))
                return ctx

    def test_task_timeout_fails_with_timeout_error(self, database_url, db_query, workflow_name):
        attempts, gate = [], threading.Event()
        self.define_blocking(workflow_name, attempts, gate, blocking_attempts=1, timeout_seconds=1)
        with cloaca.DefaultRunner(database_url) as runner:
            try:
                result = runner.execute(workflow_name)
            finally:
                gate.set()

        assert result.status == "Failed"
        assert len(attempts) == 1
        message = result.error_message
        assert message.startswith("Task 'sleeper' failed after 1 attempt(s): TimeoutError"), message
        assert "task 'sleeper' timed out" in message
        row = task_row(db_query, database_url, result.execution_id, "sleeper")
        assert (row["status"], row["attempt"], row["failures"], row["error_type"]) == (
            "failed",
            "1",
            "1",
            "TimeoutError",
        )

    @pytest.mark.parametrize("condition", ["all_errors", "transient_only", "timed out"])
    def test_a_timed_out_attempt_is_retried(self, database_url, db_query, workflow_name, condition):
        attempts, gate = [], threading.Event()
        self.define_blocking(
            workflow_name,
            attempts,
            gate,
            blocking_attempts=1,
            timeout_seconds=1,
            retry_attempts=1,
            retry_delay_ms=20,
            retry_condition=condition,
        )
        with cloaca.DefaultRunner(database_url) as runner:
            try:
                result = runner.execute(workflow_name, {"in": 1})
            finally:
                gate.set()

        assert result.status == "Completed", result.error_message
        assert len(attempts) == 2
        assert result.final_context.to_dict() == {"in": 1, "finished_attempt": 2}
        row = task_row(db_query, database_url, result.execution_id, "sleeper")
        assert (row["status"], row["attempt"], row["failures"]) == ("completed", "2", "1")

    def test_a_timed_out_attempt_is_not_retried_under_never(self, database_url, workflow_name):
        attempts, gate = [], threading.Event()
        self.define_blocking(
            workflow_name,
            attempts,
            gate,
            blocking_attempts=1,
            timeout_seconds=1,
            retry_attempts=2,
            retry_delay_ms=20,
            retry_condition="never",
        )
        with cloaca.DefaultRunner(database_url) as runner:
            try:
                result = runner.execute(workflow_name)
            finally:
                gate.set()

        assert result.status == "Failed"
        assert len(attempts) == 1
        assert "failed after 1 attempt(s): TimeoutError" in result.error_message

    def test_runner_config_timeout_is_the_default(self, database_url, db_query, workflow_name):
        """task_timeout_seconds=1 applies to a task without its own timeout; a task with
        timeout_seconds=30 that takes 2 s (longer than the default) completes."""
        gate = threading.Event()
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="uses_default")
            def uses_default(ctx):
                gate.wait(WAIT)
                return ctx

            @cloaca.task(id="own_timeout", timeout_seconds=30)
            def own_timeout(ctx):
                time.sleep(2)
                ctx.set("own_timeout", "done")
                return ctx

        config = cloaca.DefaultRunnerConfig(task_timeout_seconds=1)
        with cloaca.DefaultRunner.with_config(database_url, config) as runner:
            try:
                result = runner.execute(workflow_name)
            finally:
                gate.set()

        assert result.status == "Failed"
        assert result.error_message.startswith("Task 'uses_default' failed after 1 attempt(s): TimeoutError"), (
            result.error_message
        )
        assert "task 'uses_default' timed out" in result.error_message
        assert result.final_context.to_dict() == {"own_timeout": "done"}
        assert task_row(db_query, database_url, result.execution_id, "own_timeout")["status"] == "completed"
        assert task_row(db_query, database_url, result.execution_id, "uses_default")["error_type"] == "TimeoutError"
