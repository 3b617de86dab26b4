"""Retry value objects (RetryPolicy, RetryPolicyBuilder, BackoffStrategy,
RetryCondition), @task(retry=...), the retry_condition vocabulary,
set_default_retry_policy and the refused computation-graph keywords.

Runs are counted by the task itself (one timestamp per attempt); delays are
checked with lower bounds only, since a loaded machine is never faster.
"""

import math

import pytest
from test_retries import define_flaky

import cloaca
from cloaca import BackoffStrategy, RetryCondition, RetryPolicy, RetryPolicyBuilder

WAIT = 90  # seconds: only to keep a broken engine from hanging the suite
TOLERANCE = 0.005


@pytest.fixture
def runner(database_url):
    config = cloaca.DefaultRunnerConfig(executor_poll_interval_ms=10)
    with cloaca.DefaultRunner.with_config(database_url, config) as r:
        yield r


@pytest.fixture(autouse=True)
def restore_default_policy():
    yield
    cloaca.set_default_retry_policy(None)


def fast(max_attempts, **kwargs):
    """A policy with small fixed delays and no jitter."""
    builder = (
        RetryPolicy.builder()
        .max_attempts(max_attempts)
        .initial_delay(kwargs.pop("delay", 0.01))
        .backoff_strategy(kwargs.pop("backoff", BackoffStrategy.fixed()))
        .with_jitter(False)
    )
    if "condition" in kwargs:
        builder = builder.retry_condition(kwargs.pop("condition"))
    assert not kwargs
    return builder.build()


class TestValueObjects:
    @pytest.mark.parametrize("cls", [RetryPolicy, RetryPolicyBuilder, BackoffStrategy, RetryCondition])
    def test_not_constructible(self, cls):
        with pytest.raises(TypeError):
            cls()

    def test_default_policy(self):
        p = RetryPolicy.default()
        assert (p.max_attempts, p.initial_delay, p.max_delay, p.with_jitter) == (3, 1.0, 60.0, True)
        assert repr(p) == "RetryPolicy(max_attempts=3, initial_delay=1s, max_delay=60s, jitter=true)"
        assert repr(RetryPolicy.builder().build()) == repr(p)

    def test_builder_sets_fields_and_repr_prints_numbers_like_rust(self):
        p = RetryPolicy.builder().max_attempts(5).initial_delay(0.5).max_delay(2).with_jitter(False).build()
        assert (p.max_attempts, p.initial_delay, p.max_delay, p.with_jitter) == (5, 0.5, 2.0, False)
        assert isinstance(p.initial_delay, float) and isinstance(p.max_delay, float)
        assert repr(p) == "RetryPolicy(max_attempts=5, initial_delay=0.5s, max_delay=2s, jitter=false)"

    def test_builder_methods_return_new_builders(self):
        base = RetryPolicy.builder()
        changed = base.max_attempts(7)
        assert changed is not base
        assert isinstance(changed, RetryPolicyBuilder)
        assert base.build().max_attempts == 3
        assert changed.build().max_attempts == 7
        for method, arg in [
            ("initial_delay", 2.0),
            ("max_delay", 9.0),
            ("backoff_strategy", BackoffStrategy.fixed()),
            ("retry_condition", RetryCondition.never()),
            ("with_jitter", False),
        ]:
            other = getattr(base, method)(arg)
            assert other is not base
            assert repr(base.build()) == repr(RetryPolicy.default()), method

    def test_objects_are_immutable(self):
        p = RetryPolicy.default()
        with pytest.raises(AttributeError):
            p.max_attempts = 9
        with pytest.raises(AttributeError):
            p.anything = 1
        assert p.max_attempts == 3

    def test_backoff_and_condition_reprs(self):
        assert repr(BackoffStrategy.fixed()) == "BackoffStrategy.Fixed"
        assert repr(BackoffStrategy.linear(2)) == "BackoffStrategy.Linear(multiplier=2)"
        assert repr(BackoffStrategy.linear(1.5)) == "BackoffStrategy.Linear(multiplier=1.5)"
        assert repr(BackoffStrategy.exponential(2)) == "BackoffStrategy.Exponential(base=2, multiplier=1)"
        assert repr(BackoffStrategy.exponential(3, 0.5)) == "BackoffStrategy.Exponential(base=3, multiplier=0.5)"
        assert repr(BackoffStrategy.exponential(2, None)) == "BackoffStrategy.Exponential(base=2, multiplier=1)"
        assert repr(RetryCondition.never()) == "RetryCondition.Never"
        assert repr(RetryCondition.transient_only()) == "RetryCondition.TransientOnly"
        assert repr(RetryCondition.all_errors()) == "RetryCondition.AllErrors"
        assert repr(RetryCondition.error_pattern(["a", "b"])) == 'RetryCondition.ErrorPattern(patterns=["a", "b"])'

    def test_linear_needs_its_multiplier(self):
        with pytest.raises(TypeError):
            BackoffStrategy.linear()

    @pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize("method", ["initial_delay", "max_delay"])
    def test_bad_delays_raise_value_error_naming_the_argument(self, method, value):
        with pytest.raises(ValueError, match=rf"{method}\(delay_seconds=") as caught:
            getattr(RetryPolicy.builder(), method)(value)
        assert "delay_seconds" in str(caught.value)

    def test_bad_attempts_and_factors(self):
        with pytest.raises(ValueError, match="attempts"):
            RetryPolicy.builder().max_attempts(-1)
        with pytest.raises(ValueError, match="multiplier"):
            BackoffStrategy.linear(math.nan)
        with pytest.raises(ValueError, match="base"):
            BackoffStrategy.exponential(-2)
        with pytest.raises(ValueError, match="attempt"):
            RetryPolicy.default().calculate_delay(0)

    def test_should_retry_compares_the_attempt_with_max_attempts_only(self):
        p = RetryPolicy.builder().max_attempts(3).retry_condition(RetryCondition.never()).build()
        assert p.should_retry(1, "ValueError")
        assert p.should_retry(2, "anything")
        assert not p.should_retry(3, "ConnectionError")
        assert not RetryPolicy.builder().max_attempts(0).build().should_retry(1, "x")


class TestCalculateDelay:
    def test_formulas_without_jitter(self):
        def delays(strategy, n=5, initial=0.1, cap=60.0):
            p = (
                RetryPolicy.builder()
                .initial_delay(initial)
                .max_delay(cap)
                .backoff_strategy(strategy)
                .with_jitter(False)
                .build()
            )
            return [p.calculate_delay(a) for a in range(1, n + 1)]

        assert delays(BackoffStrategy.fixed()) == [0.1] * 5
        assert delays(BackoffStrategy.linear(2)) == [0.2, 0.4, 0.6, 0.8, 1.0]
        assert delays(BackoffStrategy.exponential(2)) == [0.1, 0.2, 0.4, 0.8, 1.6]
        assert delays(BackoffStrategy.exponential(3, 0.5)) == [0.05, 0.15, 0.45, 1.35, 4.05]
        assert delays(BackoffStrategy.exponential(2), cap=0.5) == [0.1, 0.2, 0.4, 0.5, 0.5]
        # whole milliseconds, truncated: 1 ms * 1.5 = 1.5 ms -> 1 ms
        assert delays(BackoffStrategy.linear(1.5), n=2, initial=0.001) == [0.001, 0.003]

    def test_default_is_exponential_from_one_second(self):
        p = RetryPolicy.builder().with_jitter(False).build()
        assert [p.calculate_delay(a) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]

    def test_jitter_is_applied_after_the_cap(self):
        p = RetryPolicy.builder().initial_delay(1).max_delay(2).backoff_strategy(BackoffStrategy.linear(4)).build()
        seen = [p.calculate_delay(3) for _ in range(300)]
        assert all(1.5 <= d <= 2.5 for d in seen), (min(seen), max(seen))
        assert max(seen) > 2.0, "jitter may exceed the cap"
        assert min(seen) < 2.0


class TestRetryKeyword:
    def test_max_attempts_is_the_total_number_of_attempts(self, runner, workflow_name):
        attempts = []
        define_flaky(workflow_name, attempts, lambda n: RuntimeError(f"fail {n}"), retry=fast(3))

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 3
        assert "failed after 3 attempt(s): RuntimeError: fail 3" in result.error_message

    @pytest.mark.parametrize("max_attempts", [0, 1])
    def test_zero_and_one_mean_a_single_attempt(self, runner, workflow_name, max_attempts):
        attempts = []
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("x"), retry=fast(max_attempts))

        assert runner.execute(workflow_name).status == "Failed"
        assert len(attempts) == 1

    def test_a_later_attempt_succeeds_after_the_backoff(self, runner, workflow_name):
        attempts = []
        policy = fast(4, delay=0.03, backoff=BackoffStrategy.exponential(2))
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("again"), fail_first=3, retry=policy)

        result = runner.execute(workflow_name)

        assert result.status == "Completed", result.error_message
        assert result.final_context.get("succeeded_on") == 4
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        for gap, delay in zip(gaps, [0.03, 0.06, 0.12]):
            assert gap >= delay - TOLERANCE, gaps

    def test_jittered_delays_stay_within_a_quarter_of_the_delay(self, runner, workflow_name):
        attempts = []
        policy = (
            RetryPolicy.builder().max_attempts(3).initial_delay(0.08).backoff_strategy(BackoffStrategy.fixed()).build()
        )
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("j"), retry=policy)

        assert runner.execute(workflow_name).status == "Failed"
        assert len(attempts) == 3
        gaps = [b - a for a, b in zip(attempts, attempts[1:])]
        assert all(g >= 0.06 - TOLERANCE for g in gaps), gaps

    def test_the_condition_of_the_policy_applies(self, runner, workflow_name):
        attempts = []
        policy = fast(5, condition=RetryCondition.error_pattern(["RATE LIMIT"]))
        define_flaky(
            workflow_name, attempts, lambda n: RuntimeError("rate limit hit" if n < 3 else "fatal"), retry=policy
        )

        result = runner.execute(workflow_name)

        assert result.status == "Failed"
        assert len(attempts) == 3, "retried while the pattern matched, case-insensitively"
        assert "RuntimeError: fatal" in result.error_message

    @pytest.mark.parametrize(
        "error, retried",
        [
            (ConnectionError("reset"), True),
            (TimeoutError("slow"), True),
            (OSError("disk full"), True),
            (RuntimeError("service unavailable"), True),
            (ValueError("Temporary glitch"), True),
            (ValueError("bad input"), False),
            (RuntimeError("overloaded"), False),
        ],
        ids=["connection", "timeout", "oserror", "unavailable", "temporary", "value", "overloaded"],
    )
    def test_transient_only(self, runner, workflow_name, error, retried):
        attempts = []
        policy = fast(2, condition=RetryCondition.transient_only())
        define_flaky(workflow_name, attempts, lambda n: type(error)(*error.args), fail_first=1, retry=policy)

        result = runner.execute(workflow_name)

        assert result.status == ("Completed" if retried else "Failed"), result.error_message
        assert len(attempts) == (2 if retried else 1)

    def test_never_and_all_errors(self, runner, workflow_name):
        never, every = [], []
        define_flaky(
            workflow_name, never, lambda n: ConnectionError("x"), retry=fast(3, condition=RetryCondition.never())
        )
        assert runner.execute(workflow_name).status == "Failed"
        define_flaky(
            workflow_name + "_all", every, lambda n: KeyError("x"), retry=fast(3, condition=RetryCondition.all_errors())
        )
        assert runner.execute(workflow_name + "_all").status == "Failed"
        assert (len(never), len(every)) == (1, 3)

    def test_a_builder_is_a_type_error(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(TypeError, match=r"RetryPolicyBuilder.*\.build\(\)"):
                cloaca.task(id="t", retry=RetryPolicy.builder())
            with pytest.raises(TypeError, match="RetryPolicy"):
                cloaca.task(id="t", retry=3)

            @cloaca.task(id="t")
            def t(ctx):
                return ctx

    def test_retry_cannot_be_combined_with_retry_keywords(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError) as caught:
                cloaca.task(
                    id="t",
                    retry=RetryPolicy.default(),
                    retry_jitter=False,
                    retry_condition="never",
                    retry_attempts=2,
                    retry_backoff="fixed",
                    retry_max_delay_ms=5,
                    retry_delay_ms=1,
                )
            message = str(caught.value)
            assert "cannot be combined with the retry_* keyword arguments" in message
            names = "retry_attempts, retry_backoff, retry_delay_ms, retry_max_delay_ms, retry_condition, retry_jitter"
            assert f"(got: {names})" in message
            with pytest.raises(ValueError, match=r"\(got: retry_delay_ms\)"):
                cloaca.task(id="t", retry=RetryPolicy.default(), retry_delay_ms=0)
            # a keyword passed as None does not count
            cloaca.task(id="t", retry=RetryPolicy.default(), retry_attempts=None, retry_jitter=None)

            @cloaca.task(id="t")
            def t(ctx):
                return ctx

    def test_the_policy_is_part_of_the_version(self, workflow_name):
        class Built(Exception):
            pass

        def version(**options):
            # Raising inside the block registers nothing, so the name can be reused.
            with pytest.raises(Built):
                with cloaca.WorkflowBuilder(workflow_name) as builder:

                    @cloaca.task(id="t", **options)
                    def t(ctx):
                        return ctx

                    built = builder.build().version
                    raise Built
            return built

        keywords = version(retry_attempts=2)
        assert version(retry_attempts=2) == keywords
        assert version(retry=RetryPolicy.default()) == version(retry=RetryPolicy.default())
        assert version(retry=RetryPolicy.default()) != keywords
        exp3 = RetryPolicy.builder().backoff_strategy(BackoffStrategy.exponential(3)).build()
        assert version(retry=exp3) != version(retry=RetryPolicy.default())
        assert version(retry=RetryPolicy.builder().with_jitter(False).build()) != version(retry=RetryPolicy.default())


def retried_once(runner, workflow_name, condition, error):
    """Whether a task that fails once with (a copy of) `error` is retried under
    retry_condition=`condition`: it then completes on its second attempt, else it
    fails after its only one."""
    attempts = []
    define_flaky(
        workflow_name,
        attempts,
        lambda n: type(error)(*error.args),
        fail_first=1,
        retry_attempts=1,
        retry_delay_ms=5,
        retry_condition=condition,
    )
    status = runner.execute(workflow_name).status
    assert (status, len(attempts)) in {("Completed", 2), ("Failed", 1)}, (status, attempts)
    return status == "Completed"


class TestKeywordVocabulary:
    @pytest.mark.parametrize("condition", ["all", "all_errors"])
    def test_all(self, runner, workflow_name, condition):
        attempts = []
        define_flaky(
            workflow_name,
            attempts,
            lambda n: KeyError("x"),
            retry_attempts=2,
            retry_delay_ms=5,
            retry_condition=condition,
        )
        assert runner.execute(workflow_name).status == "Failed"
        assert len(attempts) == 3, "retry_attempts=2 means two retries after the first attempt"

    @pytest.mark.parametrize("condition", ["transient", "transient_only"])
    @pytest.mark.parametrize(
        "error, retried",
        [(ConnectionError("x"), True), (RuntimeError("network down"), True), (ValueError("bad"), False)],
        ids=["type", "word", "other"],
    )
    def test_transient(self, runner, workflow_name, condition, error, retried):
        assert retried_once(runner, workflow_name, condition, error) is retried

    @pytest.mark.parametrize(
        "patterns, error, retried",
        [
            ("rate limit, KeyError", RuntimeError("Rate Limit exceeded"), True),
            ("rate limit, KeyError", KeyError("k"), True),
            ("rate limit, KeyError", ValueError("limit"), False),
            ("VALUEERROR: BAD", ValueError("bad input"), True),
        ],
        ids=["first", "second", "none", "case"],
    )
    def test_comma_separated_patterns(self, runner, workflow_name, patterns, error, retried):
        assert retried_once(runner, workflow_name, patterns, error) is retried

    @pytest.mark.parametrize("value", ["", "a,,b"])
    def test_empty_patterns_are_refused(self, workflow_name, value):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError, match="empty"):
                cloaca.task(id="t", retry_condition=value)

            @cloaca.task(id="t")
            def t(ctx):
                return ctx

    def test_backoff_stays_strict(self, workflow_name):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError) as caught:
                cloaca.task(id="t", retry_backoff="Exponential")
            assert all(w in str(caught.value) for w in ('"fixed"', '"linear"', '"exponential"', "Exponential"))

            @cloaca.task(id="t")
            def t(ctx):
                return ctx


class TestDefaultRetryPolicy:
    def test_no_retry_by_default(self, runner, workflow_name):
        attempts = []
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("once"))
        assert runner.execute(workflow_name).status == "Failed"
        assert len(attempts) == 1

    def test_applies_to_tasks_decorated_afterwards_without_retry_keywords(self, runner, workflow_name):
        before = []
        define_flaky(workflow_name + "_before", before, lambda n: RuntimeError("x"))
        cloaca.set_default_retry_policy(fast(3))
        plain, keyworded, explicit = [], [], []
        define_flaky(workflow_name, plain, lambda n: RuntimeError("x"))
        define_flaky(workflow_name + "_kw", keyworded, lambda n: RuntimeError("x"), retry_delay_ms=1)
        define_flaky(workflow_name + "_explicit", explicit, lambda n: RuntimeError("x"), retry=fast(2))

        for name in (workflow_name + "_before", workflow_name, workflow_name + "_kw", workflow_name + "_explicit"):
            assert runner.execute(name).status == "Failed"

        assert len(before) == 1, "decorated before the default was set"
        assert len(plain) == 3, "takes the default policy"
        assert len(keyworded) == 1, "a retry keyword means our defaults for the rest: no retry"
        assert len(explicit) == 2

    def test_none_restores_ours(self, runner, workflow_name):
        cloaca.set_default_retry_policy(RetryPolicy.default())
        cloaca.set_default_retry_policy(None)
        attempts = []
        define_flaky(workflow_name, attempts, lambda n: RuntimeError("x"))
        assert runner.execute(workflow_name).status == "Failed"
        assert len(attempts) == 1

    def test_refuses_anything_but_a_policy(self):
        with pytest.raises(TypeError, match=r"\.build\(\)"):
            cloaca.set_default_retry_policy(RetryPolicy.builder())
        with pytest.raises(TypeError, match="RetryPolicy"):
            cloaca.set_default_retry_policy("default")


class TestComputationGraphKeywords:
    @pytest.mark.parametrize("keyword", ["invokes", "post_invocation"])
    def test_refused(self, workflow_name, keyword):
        with cloaca.WorkflowBuilder(workflow_name):
            with pytest.raises(ValueError, match="computation graphs are unsupported") as caught:
                cloaca.task(id="t", **{keyword: object()})
            assert keyword in str(caught.value)
            cloaca.task(id="t", **{keyword: None})

            @cloaca.task(id="t")
            def t(ctx):
                return ctx
