"""DefaultRunnerConfig and the database URLs a DefaultRunner accepts.

Covers every DefaultRunnerConfig field's default, attribute access, to_dict(), default(),
refusal of zero/negative values (ValueError naming the field and the value),
unknown keywords and non-bool flags; then URL validation on the backend under
test (the other backend's URL and malformed URLs raise ValueError naming the
URL and the installed backend) and, on SQLite, the in-memory and relative-path
forms.
"""

import os
import sqlite3

import pytest

import cloaca

DEFAULTS = {
    "max_concurrent_tasks": 4,
    "executor_poll_interval_ms": 100,
    "scheduler_poll_interval_ms": 100,
    "task_timeout_seconds": 300,
    "pipeline_timeout_seconds": 3600,
    "database_outage_timeout_seconds": 60,
    # 1 on SQLite (one connection), 10 on PostgreSQL.
    "db_pool_size": 1 if os.environ.get("CLOACA_TEST_BACKEND") == "sqlite" else 10,
    "enable_recovery": True,
    "enable_cron_scheduling": True,
    "enable_trigger_scheduling": True,
    "cron_poll_interval_seconds": 30,
    "cron_max_catchup_executions": 100,
    "cron_enable_recovery": True,
    "cron_recovery_interval_seconds": 300,
    "cron_lost_threshold_minutes": 10,
    "cron_max_recovery_age_seconds": 86400,
    "cron_max_recovery_attempts": 3,
    "task_lease_seconds": 30,
    "execution_retention_days": None,
}

#: Second names of settings (alias: setting); to_dict() lists each after its setting.
ALIASES = {"workflow_timeout_seconds": "pipeline_timeout_seconds"}


def as_dict(values):
    """What to_dict() shows for settings ``values``: with every alias beside its setting."""
    shown = {}
    for name, value in values.items():
        shown[name] = value
        shown.update({alias: value for alias, setting in ALIASES.items() if setting == name})
    return shown


BOOL_FIELDS = [name for name, value in DEFAULTS.items() if isinstance(value, bool)]
NUMBER_FIELDS = [name for name in DEFAULTS if name not in BOOL_FIELDS]
# Settings for which 0 means something (no waiting at all): only negatives are refused.
ZERO_ACCEPTED = ["database_outage_timeout_seconds"]
POSITIVE_FIELDS = [name for name in NUMBER_FIELDS if name not in ZERO_ACCEPTED]


# --------------------------------------------------------------------------- helpers


def assert_message_names(error, *needles):
    message = str(error.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not named in {type(error.value).__name__}: {message!r}"


def changed_value(field):
    """A valid value different from the field's default."""
    default = DEFAULTS[field]
    if default is None:  # an optional setting that is off by default
        return 7
    return (not default) if isinstance(default, bool) else default * 2 + 1


def define_greeting_workflow(name):
    """Register a one-task workflow that writes a greeting for context["who"]."""
    with cloaca.WorkflowBuilder(name):

        @cloaca.task()
        def greet(context):
            context.set("greeting", f"hello {context.get('who')}")
            return context


def assert_greeting_runs(runner, name):
    result = runner.execute(name, {"who": "cloaca"})
    assert result.status == "Completed", result.error_message
    assert result.final_context.get("greeting") == "hello cloaca"
    return result


# --------------------------------------------------------------------------- DefaultRunnerConfig


class TestDefaults:
    def test_every_default(self):
        config = cloaca.DefaultRunnerConfig()
        for field, default in DEFAULTS.items():
            value = getattr(config, field)
            assert value == default and type(value) is type(default), f"{field}={value!r}"

    def test_to_dict_lists_exactly_the_fields(self):
        assert cloaca.DefaultRunnerConfig().to_dict() == as_dict(DEFAULTS)

    def test_to_dict_keeps_bools_as_bools(self):
        as_dict = cloaca.DefaultRunnerConfig().to_dict()
        for field in BOOL_FIELDS:
            assert as_dict[field] is True, field

    def test_default_constructor(self):
        config = cloaca.DefaultRunnerConfig.default()
        assert isinstance(config, cloaca.DefaultRunnerConfig)
        assert config.to_dict() == as_dict(DEFAULTS)

    def test_default_returns_independent_instances(self):
        first = cloaca.DefaultRunnerConfig.default()
        first.max_concurrent_tasks = 1
        assert cloaca.DefaultRunnerConfig.default().max_concurrent_tasks == DEFAULTS["max_concurrent_tasks"]


@pytest.mark.parametrize("field", list(DEFAULTS))
class TestEachField:
    def test_keyword_argument(self, field):
        value = changed_value(field)
        config = cloaca.DefaultRunnerConfig(**{field: value})
        assert getattr(config, field) == value
        assert config.to_dict() == as_dict({**DEFAULTS, field: value})

    def test_attribute_assignment(self, field):
        config = cloaca.DefaultRunnerConfig()
        value = changed_value(field)
        setattr(config, field, value)
        assert getattr(config, field) == value
        assert config.to_dict() == as_dict({**DEFAULTS, field: value})

    def test_assignment_on_default(self, field):
        config = cloaca.DefaultRunnerConfig.default()
        setattr(config, field, changed_value(field))
        assert config.to_dict()[field] == changed_value(field)


def test_all_fields_at_once():
    values = {field: changed_value(field) for field in DEFAULTS}
    assert cloaca.DefaultRunnerConfig(**values).to_dict() == as_dict(values)


@pytest.mark.parametrize("field", ZERO_ACCEPTED)
class TestZeroAccepted:
    def test_zero_is_accepted(self, field):
        assert cloaca.DefaultRunnerConfig(**{field: 0}).to_dict()[field] == 0

    @pytest.mark.parametrize("value", [-1, -0.5])
    def test_a_negative_value_is_a_value_error(self, field, value):
        with pytest.raises(ValueError) as error:
            cloaca.DefaultRunnerConfig(**{field: value})
        assert_message_names(error, field, str(value))


@pytest.mark.parametrize("value", [0, -1, -7])
@pytest.mark.parametrize("field", POSITIVE_FIELDS)
class TestNonPositiveNumbers:
    def test_keyword_argument_is_a_value_error(self, field, value):
        with pytest.raises(ValueError) as error:
            cloaca.DefaultRunnerConfig(**{field: value})
        assert_message_names(error, field, str(value))

    def test_assignment_is_a_value_error_and_keeps_the_old_value(self, field, value):
        config = cloaca.DefaultRunnerConfig()
        with pytest.raises(ValueError) as error:
            setattr(config, field, value)
        assert_message_names(error, field, str(value))
        assert getattr(config, field) == DEFAULTS[field]


class TestOtherRefusals:
    def test_unknown_keyword_is_a_type_error_naming_it(self):
        with pytest.raises(TypeError) as error:
            cloaca.DefaultRunnerConfig(max_concurent_tasks=2)
        assert_message_names(error, "max_concurent_tasks")

    def test_unknown_attribute_cannot_be_set(self):
        config = cloaca.DefaultRunnerConfig()
        with pytest.raises(AttributeError):
            config.max_concurent_tasks = 2
        assert config.to_dict() == as_dict(DEFAULTS)

    @pytest.mark.parametrize("value", [1, 0, "yes", None], ids=["int-1", "int-0", "str", "None"])
    @pytest.mark.parametrize("field", BOOL_FIELDS)
    def test_flag_must_be_a_bool(self, field, value):
        with pytest.raises(TypeError):
            cloaca.DefaultRunnerConfig(**{field: value})
        config = cloaca.DefaultRunnerConfig()
        with pytest.raises(TypeError):
            setattr(config, field, value)
        assert getattr(config, field) is DEFAULTS[field]


class TestPipelineTimeoutNone:
    def test_keyword_argument(self):
        config = cloaca.DefaultRunnerConfig(pipeline_timeout_seconds=None)
        assert config.pipeline_timeout_seconds is None
        assert config.to_dict() == as_dict({**DEFAULTS, "pipeline_timeout_seconds": None})

    def test_assignment_and_back(self):
        config = cloaca.DefaultRunnerConfig()
        config.pipeline_timeout_seconds = None
        assert config.pipeline_timeout_seconds is None
        config.pipeline_timeout_seconds = 60
        assert config.pipeline_timeout_seconds == 60


class TestRunnerWithConfig:
    def test_with_config_runs_a_workflow(self, fresh_database_url, workflow_name):
        define_greeting_workflow(workflow_name)
        config = cloaca.DefaultRunnerConfig(
            max_concurrent_tasks=1, pipeline_timeout_seconds=None, enable_cron_scheduling=False
        )
        with cloaca.DefaultRunner.with_config(fresh_database_url, config) as runner:
            assert_greeting_runs(runner, workflow_name)

    def test_with_config_needs_a_config(self, fresh_database_url):
        with pytest.raises(TypeError):
            cloaca.DefaultRunner.with_config(fresh_database_url, "not a config")


# --------------------------------------------------------------------------- database URLs

ACCEPTED_FORM = {"sqlite": ":memory:", "postgres": "postgresql://user"}

# (url, what else the message must name); "{tmp}" is replaced by an empty temporary directory.
BAD_URLS = {
    "sqlite": [
        ("postgresql://user:secret@localhost:5432/app", [ACCEPTED_FORM["sqlite"]]),
        ("postgres://localhost/app", [ACCEPTED_FORM["sqlite"]]),
        ("postgresql://", [ACCEPTED_FORM["sqlite"]]),
        ("not a url", [ACCEPTED_FORM["sqlite"]]),
        ("sqlite:/x", [ACCEPTED_FORM["sqlite"]]),
        ("mysql://h/db", [ACCEPTED_FORM["sqlite"]]),
        ("sqlite://", [ACCEPTED_FORM["sqlite"]]),
        ("sqlite://{tmp}/x.db?colour=red", ["colour", "_synchronous"]),
        ("sqlite://{tmp}/x.db?_synchronous=sometimes", ["sometimes", "NORMAL", "FULL"]),
        ("sqlite://{tmp}/x.db?mode=sideways", ["sideways", "rwc"]),
        ("sqlite://{tmp}/x.db?mode", ["mode"]),
        ("sqlite://{tmp}/x.db?_busy_timeout=soon", ["soon"]),
        ("sqlite://{tmp}/x.db?_journal_mode=sideways", ["sideways", "WAL"]),
    ],
    "postgres": [
        ("sqlite://{tmp}/x.db", [ACCEPTED_FORM["postgres"]]),
        ("sqlite://:memory:", [ACCEPTED_FORM["postgres"]]),
        ("sqlite://relative.db", [ACCEPTED_FORM["postgres"]]),
        ("not a url", [ACCEPTED_FORM["postgres"]]),
        ("sqlite:/x", [ACCEPTED_FORM["postgres"]]),
        ("postgresql:/host/db", [ACCEPTED_FORM["postgres"]]),
        ("mysql://h/db", [ACCEPTED_FORM["postgres"]]),
        ("postgresql://", [ACCEPTED_FORM["postgres"]]),
        ("postgres://", [ACCEPTED_FORM["postgres"]]),
    ],
}


def _bad_url_cases(backend):
    return [pytest.param(backend, url, needles, id=url) for url, needles in BAD_URLS[backend]]


def _open_plain(url):
    return cloaca.DefaultRunner(url)


def _open_with_config(url):
    return cloaca.DefaultRunner.with_config(url, cloaca.DefaultRunnerConfig())


@pytest.mark.parametrize("open_runner", [_open_plain, _open_with_config], ids=["DefaultRunner", "with_config"])
@pytest.mark.parametrize("case_backend, url_template, needles", _bad_url_cases("sqlite") + _bad_url_cases("postgres"))
def test_bad_url_is_a_value_error_naming_url_and_backend(
    backend, tmp_path, monkeypatch, open_runner, case_backend, url_template, needles
):
    if backend != case_backend:
        pytest.skip(f"a {case_backend}-backend case")
    monkeypatch.chdir(tmp_path)  # a relative URL that is wrongly accepted creates nothing elsewhere
    url = url_template.format(tmp=tmp_path)
    with pytest.raises(ValueError) as error:
        runner = open_runner(url)
        runner.shutdown()
    assert_message_names(error, url, f"{backend} backend", *needles)
    assert list(tmp_path.iterdir()) == [], "a refused URL must not create a database"


# --------------------------------------------------------------------------- SQLite URL forms


@pytest.fixture
def sqlite_only(backend):
    if backend != "sqlite":
        pytest.skip("SQLite URL forms")


@pytest.mark.usefixtures("sqlite_only")
class TestSqliteUrlForms:
    def test_in_memory_database_runs_a_workflow(self, workflow_name):
        define_greeting_workflow(workflow_name)
        with cloaca.DefaultRunner("sqlite://:memory:") as runner:
            assert_greeting_runs(runner, workflow_name)

    @pytest.mark.parametrize("relative_path", ["relative.db", "data/nested.db"])
    def test_relative_path_is_relative_to_the_working_directory(
        self, workflow_name, tmp_path, monkeypatch, relative_path
    ):
        define_greeting_workflow(workflow_name)
        monkeypatch.chdir(tmp_path)
        (tmp_path / relative_path).parent.mkdir(parents=True, exist_ok=True)
        with cloaca.DefaultRunner(f"sqlite://{relative_path}") as runner:
            assert_greeting_runs(runner, workflow_name)
        database = tmp_path / relative_path
        assert database.is_file()
        with sqlite3.connect(database) as db:
            rows = db.execute("select workflow_name, status from cloaca_executions").fetchall()
        assert rows == [(workflow_name, "completed")]

    def test_absolute_path_with_every_query_option(self, workflow_name, tmp_path):
        define_greeting_workflow(workflow_name)
        database = tmp_path / "options.db"
        url = f"sqlite://{database}?mode=rwc&_journal_mode=WAL&_busy_timeout=5000&_synchronous=FULL"
        with cloaca.DefaultRunner(url) as runner:
            assert_greeting_runs(runner, workflow_name)
        assert database.is_file()

    @pytest.mark.parametrize("synchronous", ["OFF", "NORMAL", "FULL", "EXTRA"])
    def test_every_synchronous_level(self, workflow_name, tmp_path, synchronous):
        define_greeting_workflow(workflow_name)
        with cloaca.DefaultRunner(f"sqlite://{tmp_path}/sync.db?_synchronous={synchronous}") as runner:
            assert_greeting_runs(runner, workflow_name)


# --------------------------------------------------------------------------- DefaultRunnerConfig.settings()

SETTING_KEYS = {"name", "type", "default", "defaults", "aliases", "accepted", "doc"}


class TestSettings:
    """settings() describes every setting: its name, type, default, accepted values and meaning."""

    def test_one_entry_per_setting_in_to_dict_order(self):
        settings = cloaca.DefaultRunnerConfig.settings()
        assert isinstance(settings, list)
        assert [s["name"] for s in settings] == list(DEFAULTS)
        assert list(cloaca.DefaultRunnerConfig().to_dict()) == list(as_dict(DEFAULTS))

    def test_each_entry_has_exactly_the_keys(self):
        for setting in cloaca.DefaultRunnerConfig.settings():
            assert isinstance(setting, dict), setting
            assert set(setting) == SETTING_KEYS, setting

    def test_the_defaults_are_those_of_a_new_config(self):
        for setting in cloaca.DefaultRunnerConfig.settings():
            default = DEFAULTS[setting["name"]]
            assert setting["default"] == default and type(setting["default"]) is type(default), setting

    def test_the_texts_are_non_empty_strings(self):
        for setting in cloaca.DefaultRunnerConfig.settings():
            for key in ("name", "type", "accepted", "doc"):
                assert isinstance(setting[key], str) and setting[key].strip(), (key, setting)

    def test_the_type_says_flag_or_number_as_the_default_is(self):
        for setting in cloaca.DefaultRunnerConfig.settings():
            if isinstance(DEFAULTS[setting["name"]], bool):
                assert "bool" in setting["type"], setting
            else:
                assert "int" in setting["type"] or "float" in setting["type"], setting

    def test_the_docs_differ(self):
        docs = [s["doc"] for s in cloaca.DefaultRunnerConfig.settings()]
        assert len(set(docs)) == len(docs), "two settings share one doc"

    @pytest.mark.parametrize("field", NUMBER_FIELDS)
    def test_a_refusal_says_what_settings_accepts(self, field):
        (setting,) = [s for s in cloaca.DefaultRunnerConfig.settings() if s["name"] == field]
        with pytest.raises(ValueError) as error:
            cloaca.DefaultRunnerConfig(**{field: -1})
        assert_message_names(error, field, setting["accepted"])

    def test_a_staticmethod_returning_a_new_list_each_time(self):
        first = cloaca.DefaultRunnerConfig.settings()
        assert cloaca.DefaultRunnerConfig().settings() == first
        first[0]["default"] = "changed"
        first.clear()
        assert [s["default"] for s in cloaca.DefaultRunnerConfig.settings()] == list(DEFAULTS.values())
