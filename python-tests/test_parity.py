"""Names and behaviours shared with the original bindings' current API.

Programs written for those bindings must run on ours; where ours deliberately
differs, docs/migrating.md says how. These run on both backends.
"""

import os

import pytest

import cloaca

# ------------------------------------------------------------ var / var_or ---


def test_var_reads_the_prefixed_environment_variable_at_every_call(monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_Api_Host", "db.example")
    assert cloaca.var("Api_Host") == "db.example"
    os.environ["CLOACINA_VAR_Api_Host"] = "other.example"
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
