"""Names and behaviours shared with the original bindings' current API.

Programs written for those bindings must run on ours; where ours deliberately
differs, docs/migrating.md says how. These run on both backends.
"""

import os
import time
import uuid

import pytest
from test_execution import define_raising

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
    define_raising(workflow_name, "boom", RuntimeError("no luck"))
    result = runner.execute(workflow_name)
    assert result.status == "Failed"
    assert repr(result) == f"WorkflowResult(status=Failed, error={result.error_message})"
    assert "no luck" in repr(result)


# ------------------------------------------------------------------------ cron ---


@pytest.fixture
def scheduled(runner, workflow_name):
    """A runner with one registered workflow and one schedule of it (that fires nothing soon)."""
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="noop")
        def noop(context):
            pass

    return runner, runner.register_cron_workflow(workflow_name, "0 3 1 1 *", "UTC")


def test_listing_and_history_take_none_for_their_defaults(scheduled):
    runner, schedule_id = scheduled
    listed = runner.list_cron_schedules()
    assert runner.list_cron_schedules(None, None, None) == listed
    assert runner.list_cron_schedules(enabled_only=None, limit=None, offset=None) == listed
    assert runner.list_cron_schedules(True, 1, 0) == listed
    assert runner.get_cron_execution_history(schedule_id, None, None) == []
    assert runner.get_cron_execution_history(schedule_id, limit=None, offset=None) == []


def test_a_schedule_dict_has_every_key_of_the_original_bindings(scheduled):
    runner, schedule_id = scheduled
    schedule = runner.get_cron_schedule(schedule_id)
    for key in (
        "id",
        "workflow_name",
        "cron_expression",
        "timezone",
        "enabled",
        "catchup_policy",
        "next_run_at",
        "last_run_at",
        "created_at",
        "updated_at",
    ):
        assert key in schedule, key
    assert schedule["catchup_policy"] == "run_all"


def test_a_history_row_names_the_execution_as_workflow_execution_id(fresh_database_url, workflow_name):
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="noop")
        def noop(context):
            pass

    config = cloaca.DefaultRunnerConfig(cron_poll_interval_seconds=0.2)
    with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
        schedule_id = runner.register_cron_workflow(workflow_name, "* * * * * *", "UTC")
        deadline = time.monotonic() + 30
        while not (rows := runner.get_cron_execution_history(schedule_id)) and time.monotonic() < deadline:
            time.sleep(0.1)
        runner.set_cron_schedule_enabled(schedule_id, False)
    assert rows, "no tick started within 30 s"
    assert rows[0]["workflow_execution_id"] == rows[0]["execution_id"]


UNKNOWN_ID_CALLS = {
    "get": ("Failed to get cron schedule", lambda r, sid: r.get_cron_schedule(sid)),
    "update": ("Failed to update cron schedule", lambda r, sid: r.update_cron_schedule(sid, "0 4 * * *")),
    "enable": ("Failed to update cron schedule", lambda r, sid: r.set_cron_schedule_enabled(sid, True)),
    "delete": ("Failed to delete cron schedule", lambda r, sid: r.delete_cron_schedule(sid)),
    "history": ("Failed to get cron execution history", lambda r, sid: r.get_cron_execution_history(sid)),
}


@pytest.mark.parametrize(("prefix", "call"), UNKNOWN_ID_CALLS.values(), ids=UNKNOWN_ID_CALLS.keys())
def test_an_unknown_schedule_id_is_both_key_error_and_value_error(scheduled, prefix, call):
    runner, _ = scheduled
    unknown = str(uuid.uuid4())
    with pytest.raises(cloaca.ScheduleNotFoundError) as raised:
        call(runner, unknown)
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, ValueError)
    assert prefix in str(raised.value) and unknown in str(raised.value)


@pytest.mark.parametrize(("prefix", "call"), UNKNOWN_ID_CALLS.values(), ids=UNKNOWN_ID_CALLS.keys())
def test_a_malformed_schedule_id_is_a_value_error_saying_so(scheduled, prefix, call):
    runner, _ = scheduled
    with pytest.raises(ValueError) as raised:
        call(runner, "not-a-schedule")
    assert prefix in str(raised.value) and "Invalid schedule ID" in str(raised.value)
    assert "not-a-schedule" in str(raised.value)


def test_a_deleted_schedule_id_raises_the_same_class(scheduled):
    runner, schedule_id = scheduled
    runner.delete_cron_schedule(schedule_id)
    with pytest.raises(ValueError, match="Failed to get cron schedule") as raised:
        runner.get_cron_schedule(schedule_id)
    assert type(raised.value) is cloaca.ScheduleNotFoundError and schedule_id in str(raised.value)


def test_every_error_of_a_cron_method_carries_its_prefix(scheduled, workflow_name):
    runner, schedule_id = scheduled
    cases = [
        ("Failed to register cron workflow", lambda: runner.register_cron_workflow("no_such_workflow", "0 3 * * *")),
        ("Failed to register cron workflow", lambda: runner.register_cron_workflow(workflow_name, "61 * * * *")),
        (
            "Failed to register cron workflow",
            lambda: runner.register_cron_workflow(workflow_name, "0 3 * * *", "Mars/X"),
        ),
        ("Failed to list cron schedules", lambda: runner.list_cron_schedules(limit=0)),
        ("Failed to list cron schedules", lambda: runner.list_cron_schedules(offset=-1)),
        ("Failed to update cron schedule", lambda: runner.update_cron_schedule(schedule_id, "not cron")),
        ("Failed to get cron execution history", lambda: runner.get_cron_execution_history(schedule_id, limit=0)),
        ("Failed to get cron execution stats", lambda: runner.get_cron_execution_stats("yesterday")),
    ]
    for prefix, call in cases:
        with pytest.raises(ValueError) as raised:
            call()
        assert prefix in str(raised.value), (prefix, str(raised.value))


def test_a_bad_since_says_invalid_datetime_format(scheduled):
    runner, _ = scheduled
    with pytest.raises(ValueError, match="Invalid datetime format"):
        runner.get_cron_execution_stats("2026-13-45")


def test_a_shut_down_runner_still_names_the_method(fresh_database_url):
    runner = cloaca.DefaultRunner(fresh_database_url)
    runner.shutdown()
    with pytest.raises(cloaca.RunnerShutDownError, match="Failed to list cron schedules"):
        runner.list_cron_schedules()


# ------------------------------------------------------ creating a DefaultRunner ---

PREFIX = "Failed to create DefaultRunner: "


def other_backend_url(backend):
    return {"sqlite": "postgresql://user@127.0.0.1:1/db", "postgres": "sqlite:///tmp/x.db"}[backend]


def assert_creation_failure(error, specific=None):
    assert isinstance(error, cloaca.RunnerCreationError), type(error).__mro__
    assert isinstance(error, ValueError) and isinstance(error, RuntimeError)
    assert str(error).startswith(PREFIX), str(error)
    if specific is not None:
        assert isinstance(error, specific) and type(error).__name__ == specific.__name__


@pytest.mark.parametrize("url", ["mysql://h/db", "not a url", "sqlite://"])
def test_a_bad_url_is_a_creation_failure_and_an_invalid_url_error(backend, url):
    with pytest.raises(RuntimeError) as raised:
        cloaca.DefaultRunner(url)
    assert_creation_failure(raised.value, cloaca.InvalidUrlError)
    assert url in str(raised.value)


def test_the_other_backends_url_is_a_creation_failure(backend):
    with pytest.raises(ValueError) as raised:
        cloaca.DefaultRunner(other_backend_url(backend))
    assert_creation_failure(raised.value, cloaca.InvalidUrlError)


def test_an_unreachable_database_is_a_creation_failure_and_a_connection_error(backend, tmp_path):
    url = {
        "sqlite": f"sqlite:///{tmp_path}/missing/dir/x.db",
        "postgres": "postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2",
    }[backend]
    config = cloaca.DefaultRunnerConfig(database_outage_timeout_seconds=0)
    with pytest.raises(ConnectionError) as raised:
        cloaca.DefaultRunner.with_config(url, config)
    assert_creation_failure(raised.value, cloaca.DatabaseUnavailableError)


def test_with_schema_requires_postgresql(backend, fresh_database_url):
    url = fresh_database_url if backend == "sqlite" else "sqlite:///tmp/x.db"
    with pytest.raises(ValueError) as raised:
        cloaca.DefaultRunner.with_schema(url, "tenant_a")
    assert "requires PostgreSQL" in str(raised.value)
    assert_creation_failure(raised.value)


@pytest.mark.usefixtures("postgres_only")
class TestWithSchemaNames:
    URL = "postgresql://postgres@127.0.0.1:1/postgres"

    def test_an_empty_name(self):
        with pytest.raises(ValueError, match="Schema name cannot be empty") as raised:
            cloaca.DefaultRunner.with_schema(self.URL, "")
        assert_creation_failure(raised.value, cloaca.TenantError)

    @pytest.mark.parametrize("name", ["tenant-a", "a b", "x;DROP", "tenant\n", "ten\0ant"])
    def test_a_character_that_is_not_accepted(self, name):
        with pytest.raises(ValueError) as raised:
            cloaca.DefaultRunner.with_schema(self.URL, name)
        assert "Schema name must contain only alphanumeric characters and underscores" in str(raised.value)
        assert_creation_failure(raised.value, cloaca.TenantError)

    @pytest.mark.parametrize("name", ["1abc", "a" * 64, "pg_x", "information_schema"])
    def test_names_the_rule_refuses(self, name):
        with pytest.raises(ValueError) as raised:
            cloaca.DefaultRunner.with_schema(self.URL, name)
        assert_creation_failure(raised.value, cloaca.TenantError)
        assert "127.0.0.1:1" not in str(raised.value), "refused before connecting"

    def test_an_upper_case_name_is_folded_to_lower_case(self, fresh_database_url, workflow_name, db_query):
        with cloaca.WorkflowBuilder(workflow_name):

            @cloaca.task(id="mark")
            def mark(context):
                context.set("marked", True)

        with cloaca.DefaultRunner.with_schema(fresh_database_url, "Tenant_A") as runner:
            assert runner.execute(workflow_name).status == "Completed"
        with cloaca.DefaultRunner.with_schema(fresh_database_url, "tenant_a") as runner:
            assert [r.workflow_name for r in runner.list_executions()] == [workflow_name]
        schemas = {row[0] for row in db_query(fresh_database_url, "SELECT nspname FROM pg_namespace")}
        assert "tenant_a" in schemas and "Tenant_A" not in schemas

    def test_a_connection_failure_starts_with_the_phrase(self):
        config = cloaca.DefaultRunnerConfig(database_outage_timeout_seconds=0)
        with pytest.raises(RuntimeError) as raised:
            cloaca.DefaultRunner.with_schema(self.URL + "?connect_timeout=2", "tenant_a", config)
        assert_creation_failure(raised.value, cloaca.DatabaseUnavailableError)
        assert isinstance(raised.value, ConnectionError)


# ------------------------------------------------------------ SQLite URL forms ---


def run_marked(url, workflow_name):
    with cloaca.WorkflowBuilder(workflow_name):

        @cloaca.task(id="mark")
        def mark(context):
            context.set("marked", True)

    with cloaca.DefaultRunner(url) as runner:
        result = runner.execute(workflow_name)
        assert result.status == "Completed", result.error_message
        return runner.list_executions()


@pytest.mark.usefixtures("sqlite_only")
class TestSqliteUrlForms:
    @pytest.mark.parametrize("form", ["{abs}/a.db", "./rel.db", "rel.sqlite", "rel.sqlite3", "sub/rel.db", "../up.db"])
    def test_a_bare_path(self, tmp_path, monkeypatch, workflow_name, form):
        (tmp_path / "sub").mkdir()
        (tmp_path / "cwd").mkdir()
        monkeypatch.chdir(tmp_path / "cwd" if form.startswith("../") else tmp_path)
        url = form.format(abs=tmp_path)
        run_marked(url, workflow_name)
        target = (tmp_path / "cwd" / url).resolve() if form.startswith("../") else tmp_path / url
        assert target.exists(), target

    @pytest.mark.parametrize("form", ["file:{abs}/f.db", "file://{abs}/f.db", "file:rel.db"])
    def test_a_file_uri(self, tmp_path, monkeypatch, workflow_name, form):
        monkeypatch.chdir(tmp_path)
        run_marked(form.format(abs=tmp_path), workflow_name)
        assert (tmp_path / ("rel.db" if "rel" in form else "f.db")).exists()

    @pytest.mark.parametrize("url", [":memory:", "sqlite://:memory:", "file::memory:"])
    def test_memory_databases_are_private_to_their_runner(self, tmp_path, monkeypatch, workflow_name, url):
        monkeypatch.chdir(tmp_path)
        assert len(run_marked(url, workflow_name)) == 1
        with cloaca.DefaultRunner(url) as other:
            assert other.list_executions() == [], "a second runner sees its own, empty database"
        assert list(tmp_path.iterdir()) == [], "nothing is left behind"

    def test_our_query_options_keep_working_on_every_form(self, tmp_path, monkeypatch, workflow_name):
        monkeypatch.chdir(tmp_path)
        run_marked("opts.db?_journal_mode=DELETE&_synchronous=FULL&_busy_timeout=100", workflow_name)
        with cloaca.DefaultRunner(f"{tmp_path}/opts.db?mode=rw") as runner:
            assert len(runner.list_executions()) == 1
        with pytest.raises(ValueError, match="colour"):
            cloaca.DefaultRunner("x.db?colour=red")

    def test_a_bare_word_is_still_refused(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(cloaca.InvalidUrlError, match="no scheme"):
            cloaca.DefaultRunner("database")
        assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("postgres_only")
@pytest.mark.parametrize("url", [":memory:", "/tmp/x.db", "x.sqlite", "file:x.db"])
def test_the_sqlite_forms_name_the_installed_backend_on_postgres(url):
    with pytest.raises(cloaca.InvalidUrlError, match="postgres backend is installed"):
        cloaca.DefaultRunner(url)
