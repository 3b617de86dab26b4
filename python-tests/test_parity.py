"""Names and behaviours shared with the original bindings' current API.

Programs written for those bindings must run on ours; where ours deliberately
differs, docs/migrating.md says how. These run on both backends.
"""

import os
import time

import pytest

import cloaca


@pytest.fixture
def runner(fresh_database_url):
    with cloaca.DefaultRunner(fresh_database_url) as r:
        yield r


# ------------------------------------------------------------ var / var_or ---


def test_var_reads_the_prefixed_environment_variable_at_every_call(monkeypatch):
    variable = "CLOACINA_VAR_Api_Host"  # mixed case on purpose: names are used verbatim
    monkeypatch.setenv(variable, "db.example")
    assert cloaca.var("Api_Host") == "db.example"
    os.environ[variable] = "other.example"
    assert cloaca.var("Api_Host") == "other.example", "no caching"
    monkeypatch.setenv("CLOACINA_VAR_EMPTY", "")
    assert cloaca.var("EMPTY") == ""


def test_var_is_case_sensitive_and_raises_key_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_token", "x")
    monkeypatch.delenv("CLOACINA_VAR_TOKEN", raising=False)
    with pytest.raises(KeyError) as raised:
        cloaca.var("TOKEN")
    assert "required variable 'TOKEN' not set (expected env var CLOACINA_VAR_TOKEN)" in str(raised.value)


@pytest.mark.parametrize("name", ["A=B", "NUL\0NAME", "="])
def test_var_with_a_name_no_variable_can_have_raises_the_same_key_error(name):
    with pytest.raises(KeyError) as raised:
        cloaca.var(name)
    assert "required variable" in str(raised.value)
    assert cloaca.var_or(name, "fallback") == "fallback"


def test_var_or_gives_the_value_or_the_default(monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_SET", "value")
    monkeypatch.delenv("CLOACINA_VAR_UNSET", raising=False)
    assert cloaca.var_or("SET", "d") == "value"
    assert cloaca.var_or("UNSET", "d") == "d"
    with pytest.raises(TypeError):
        cloaca.var_or("UNSET", 3)


# ------------------------------------------------- workflow_timeout_seconds ---


def test_workflow_timeout_seconds_is_pipeline_timeout_seconds_under_a_second_name():
    config = cloaca.DefaultRunnerConfig(workflow_timeout_seconds=12)
    assert config.pipeline_timeout_seconds == 12 and config.workflow_timeout_seconds == 12
    config.workflow_timeout_seconds = None
    assert config.pipeline_timeout_seconds is None
    config.pipeline_timeout_seconds = 7.5
    assert config.workflow_timeout_seconds == 7.5
    shown = config.to_dict()
    assert shown["workflow_timeout_seconds"] == shown["pipeline_timeout_seconds"] == 7.5
    assert cloaca.DefaultRunnerConfig().workflow_timeout_seconds == 3600
    assert "workflow_timeout_seconds" in dir(config)


def test_both_timeout_names_with_one_value_are_accepted_and_different_values_refused():
    both = cloaca.DefaultRunnerConfig(workflow_timeout_seconds=5, pipeline_timeout_seconds=5)
    assert both.workflow_timeout_seconds == 5
    with pytest.raises(ValueError) as raised:
        cloaca.DefaultRunnerConfig(workflow_timeout_seconds=5, pipeline_timeout_seconds=6)
    assert "workflow_timeout_seconds" in str(raised.value) and "pipeline_timeout_seconds" in str(raised.value)


def test_the_alias_is_checked_as_its_setting():
    with pytest.raises(cloaca.ConfigurationError, match="workflow_timeout_seconds"):
        cloaca.DefaultRunnerConfig(workflow_timeout_seconds=0)
    with pytest.raises(TypeError):
        cloaca.DefaultRunnerConfig().workflow_timeout_seconds = "soon"


def test_the_alias_times_out_execute(fresh_database_url, workflow_name):
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="slow")
        def slow(context):
            time.sleep(2)

    config = cloaca.DefaultRunnerConfig(workflow_timeout_seconds=0.3)
    with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
        assert runner.execute(workflow_name).status == "Failed"


# ---------------------------------------------------------------- db_pool_size ---


def test_db_pool_size_defaults_to_one_on_sqlite_and_ten_on_postgres(backend):
    expected = {"sqlite": 1, "postgres": 10}[backend]
    assert cloaca.DefaultRunnerConfig().db_pool_size == expected
    assert cloaca.DefaultRunnerConfig().to_dict()["db_pool_size"] == expected
    (setting,) = [s for s in cloaca.DefaultRunnerConfig.settings() if s["name"] == "db_pool_size"]
    assert setting["default"] == expected and setting["defaults"] == {"sqlite": 1, "postgres": 10}
    assert cloaca.DefaultRunnerConfig(db_pool_size=3).db_pool_size == 3


def test_db_pool_size_zero_is_refused_with_the_usual_phrase():
    with pytest.raises(ValueError) as raised:
        cloaca.DefaultRunnerConfig(db_pool_size=0)
    assert "Invalid configuration: db_pool_size must be > 0" in str(raised.value)


# -------------------------------------------------------------- WorkflowResult ---


def test_workflow_result_is_pipeline_result():
    assert cloaca.WorkflowResult is cloaca.PipelineResult
    assert "WorkflowResult" in cloaca.__all__


def test_a_result_shows_status_and_error_and_keeps_its_execution_id(runner, workflow_name):
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="ok")
        def ok(context):
            context.set("done", True)

    result = runner.execute(workflow_name)
    assert isinstance(result, cloaca.WorkflowResult)
    assert repr(result) == "WorkflowResult(status=Completed, error=None)"
    assert result.execution_id and result.end_time is not None and isinstance(result.start_time, str)
    assert result.final_context.get("done") is True


def test_a_failed_result_shows_its_error(runner, workflow_name):
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="boom")
        def boom(context):
            raise RuntimeError("no luck")

    result = runner.execute(workflow_name)
    assert result.status == "Failed"
    assert repr(result) == f"WorkflowResult(status=Failed, error={result.error_message})"
    assert "no luck" in repr(result)
