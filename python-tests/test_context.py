"""cloaca.Context: the JSON state a workflow's tasks share.

Covers construction, the get/set/insert/update/remove methods and their errors, the mapping protocol,
to_dict / update_from_dict / to_json / from_json, repr, the refusal of values
JSON cannot represent (TypeError naming the key and the type), and an exact
round trip of every kind of JSON value.
"""

import json
import math
import sys

import pytest

import cloaca

Context = cloaca.Context


# --------------------------------------------------------------------------- helpers


def assert_same_json(actual, expected, path="$"):
    """Structural equality that also checks types: True is not 1, 1.0 is not 1, -0.0 is not 0.0."""
    assert type(actual) is type(expected), f"{path}: {actual!r} ({type(actual).__name__}) != {expected!r}"
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same_json(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same_json(a, e, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == expected and math.copysign(1, actual) == math.copysign(1, expected), (
            f"{path}: {actual!r} != {expected!r}"
        )
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def assert_message_names(error, *needles):
    message = str(error.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not named in {type(error.value).__name__}: {message!r}"


def nested(depth, kind):
    """A value nested `depth` levels deep: lists, dicts, or both alternating."""
    value = "bottom"
    for level in range(depth):
        use_list = kind == "list" or (kind == "mixed" and level % 2 == 0)
        value = [value] if use_list else {f"level{level}": value}
    return value


# --------------------------------------------------------------------------- construction


class TestConstruction:
    def test_without_data_is_empty(self):
        ctx = Context()
        assert len(ctx) == 0
        assert ctx.to_dict() == {}

    def test_none_is_empty(self):
        ctx = Context(None)
        assert len(ctx) == 0
        assert ctx.to_dict() == {}

    def test_with_dict_holds_its_items(self):
        data = {
            "name": "cloaca",
            "count": 3,
            "ratio": 0.5,
            "ok": True,
            "nothing": None,
            "items": [1, 2],
            "nested": {"a": {"b": "c"}},
        }
        ctx = Context(data)
        assert len(ctx) == len(data)
        assert_same_json(ctx.to_dict(), data)

    def test_keyword_argument_data(self):
        assert Context(data={"k": "v"}).to_dict() == {"k": "v"}

    def test_copies_the_dict_it_is_given(self):
        data = {"items": [1, 2], "flag": False}
        ctx = Context(data)
        data["flag"] = True
        data["items"].append(3)
        data["added"] = 1
        assert ctx.to_dict() == {"items": [1, 2], "flag": False}

    def test_tuples_become_lists(self):
        ctx = Context({"pair": (1, (2, "three"))})
        assert_same_json(ctx.to_dict(), {"pair": [1, [2, "three"]]})

    @pytest.mark.parametrize("data", ["not a dict", 42, [("k", "v")]], ids=["str", "int", "list-of-pairs"])
    def test_non_dict_data_is_a_type_error(self, data):
        with pytest.raises(TypeError):
            Context(data)

    def test_non_string_top_level_key_is_a_type_error(self):
        with pytest.raises(TypeError) as error:
            Context({7: "seven"})
        assert_message_names(error, "7", "int")


# --------------------------------------------------------------------------- methods


class TestGet:
    def test_present_key(self):
        assert Context({"k": [1, 2]}).get("k") == [1, 2]

    def test_absent_key_defaults_to_none(self):
        assert Context({"k": 1}).get("missing") is None

    def test_absent_key_returns_the_default(self):
        assert Context().get("missing", "fallback") == "fallback"

    def test_present_key_ignores_the_default(self):
        assert Context({"k": 0}).get("k", 99) == 0

    def test_stored_none_is_returned_not_the_default(self):
        assert Context({"k": None}).get("k", "fallback") is None

    def test_returned_values_are_copies(self):
        ctx = Context({"items": [1], "inner": {"a": 1}})
        ctx.get("items").append(2)
        ctx.get("inner")["b"] = 2
        assert ctx.to_dict() == {"items": [1], "inner": {"a": 1}}


class TestSet:
    def test_inserts_a_new_key(self):
        ctx = Context()
        ctx.set("k", "v")
        assert ctx.to_dict() == {"k": "v"}

    def test_overwrites_an_existing_key(self):
        ctx = Context({"k": "old", "other": 1})
        ctx.set("k", {"new": True})
        assert ctx.to_dict() == {"k": {"new": True}, "other": 1}

    def test_non_string_key_is_a_type_error(self):
        ctx = Context()
        with pytest.raises(TypeError):
            ctx.set(1, "v")
        assert len(ctx) == 0


class TestInsert:
    def test_inserts_a_new_key(self):
        ctx = Context({"a": 1})
        ctx.insert("b", 2)
        assert ctx.to_dict() == {"a": 1, "b": 2}

    def test_existing_key_is_a_value_error_and_keeps_the_value(self):
        ctx = Context({"taken": "original"})
        with pytest.raises(ValueError) as error:
            ctx.insert("taken", "replacement")
        assert_message_names(error, "taken")
        assert ctx.to_dict() == {"taken": "original"}

    def test_existing_key_holding_none_is_still_taken(self):
        ctx = Context({"taken": None})
        with pytest.raises(ValueError):
            ctx.insert("taken", 1)
        assert ctx.to_dict() == {"taken": None}


class TestUpdate:
    def test_overwrites_an_existing_key(self):
        ctx = Context({"k": 1, "other": 2})
        ctx.update("k", 10)
        assert ctx.to_dict() == {"k": 10, "other": 2}

    def test_absent_key_is_a_key_error_and_adds_nothing(self):
        ctx = Context({"present": 1})
        with pytest.raises(KeyError) as error:
            ctx.update("absent_key", 2)
        assert_message_names(error, "absent_key")
        assert ctx.to_dict() == {"present": 1}


class TestRemove:
    def test_returns_the_old_value_and_removes_the_key(self):
        ctx = Context({"k": {"deep": [1]}, "other": 2})
        assert ctx.remove("k") == {"deep": [1]}
        assert ctx.to_dict() == {"other": 2}

    def test_absent_key_returns_none(self):
        ctx = Context({"other": 2})
        assert ctx.remove("absent") is None
        assert ctx.to_dict() == {"other": 2}

    def test_removing_twice(self):
        ctx = Context({"k": "v"})
        assert ctx.remove("k") == "v"
        assert ctx.remove("k") is None
        assert len(ctx) == 0


# --------------------------------------------------------------------------- mapping protocol


class TestMappingProtocol:
    def test_getitem(self):
        assert Context({"k": [True]})["k"] == [True]

    def test_getitem_absent_is_a_key_error(self):
        with pytest.raises(KeyError) as error:
            Context({"k": 1})["missing_key"]
        assert_message_names(error, "missing_key")

    def test_setitem_inserts_and_overwrites(self):
        ctx = Context()
        ctx["k"] = 1
        ctx["k"] = 2
        ctx["j"] = "x"
        assert ctx.to_dict() == {"k": 2, "j": "x"}

    def test_delitem(self):
        ctx = Context({"k": 1, "j": 2})
        del ctx["k"]
        assert ctx.to_dict() == {"j": 2}

    def test_delitem_absent_is_a_key_error(self):
        ctx = Context({"k": 1})
        with pytest.raises(KeyError) as error:
            del ctx["missing_key"]
        assert_message_names(error, "missing_key")
        assert ctx.to_dict() == {"k": 1}

    def test_contains(self):
        ctx = Context({"k": None})
        assert "k" in ctx
        assert "missing" not in ctx

    def test_len_follows_changes(self):
        ctx = Context({"a": 1})
        assert len(ctx) == 1
        ctx["b"] = 2
        assert len(ctx) == 2
        ctx.remove("a")
        assert len(ctx) == 1
        del ctx["b"]
        assert len(ctx) == 0

    def test_iteration_yields_each_key_once(self):
        data = {"alpha": 1, "beta": [2], "gamma": {"x": 3}, "": 0}
        keys = list(Context(data))
        assert sorted(keys) == sorted(data)

    def test_iterating_an_empty_context(self):
        assert list(Context()) == []

    def test_dict_of_items_via_iteration(self):
        data = {"a": 1, "b": "two"}
        ctx = Context(data)
        assert {key: ctx[key] for key in ctx} == data


# --------------------------------------------------------------------------- dict and JSON conversion


class TestToDictAndUpdateFromDict:
    def test_to_dict_returns_an_independent_copy(self):
        ctx = Context({"items": [1], "k": "v"})
        snapshot = ctx.to_dict()
        snapshot["items"].append(2)
        snapshot["new"] = True
        assert ctx.to_dict() == {"items": [1], "k": "v"}

    def test_update_from_dict_merges_and_overwrites(self):
        ctx = Context({"keep": 1, "replace": "old"})
        ctx.update_from_dict({"replace": "new", "add": [1, 2]})
        assert ctx.to_dict() == {"keep": 1, "replace": "new", "add": [1, 2]}

    def test_update_from_empty_dict_changes_nothing(self):
        ctx = Context({"keep": 1})
        ctx.update_from_dict({})
        assert ctx.to_dict() == {"keep": 1}

    def test_update_from_non_dict_is_a_type_error(self):
        ctx = Context({"keep": 1})
        with pytest.raises(TypeError):
            ctx.update_from_dict(["not", "a", "dict"])
        assert ctx.to_dict() == {"keep": 1}


class TestJson:
    def test_to_json_is_a_json_object_of_the_data(self):
        data = {"s": "text", "i": -5, "f": 2.5, "b": False, "n": None, "l": [1, "x"], "d": {"k": "v"}}
        text = Context(data).to_json()
        assert isinstance(text, str)
        assert_same_json(json.loads(text), data)

    def test_empty_context_to_json(self):
        assert json.loads(Context().to_json()) == {}

    def test_from_json_builds_a_context(self):
        ctx = Context.from_json('{"a": 1, "b": [true, null], "c": {"d": "e"}}')
        assert isinstance(ctx, Context)
        assert_same_json(ctx.to_dict(), {"a": 1, "b": [True, None], "c": {"d": "e"}})

    def test_from_json_of_an_empty_object(self):
        assert len(Context.from_json("{}")) == 0

    def test_from_json_accepts_surrounding_whitespace(self):
        assert Context.from_json('  \n{"a": 1}\t\n').to_dict() == {"a": 1}

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "{",
            "not json",
            "{'single': 'quotes'}",
            '{"trailing": 1,}',
            '{"a": 1} extra',
            '{"a": NaN}',
            '{"a": Infinity}',
            "{a: 1}",
        ],
    )
    def test_from_json_invalid_json_is_a_value_error(self, text):
        with pytest.raises(ValueError):
            Context.from_json(text)

    @pytest.mark.parametrize("text", ["[]", "[1, 2]", "42", "1.5", '"text"', "null", "true"])
    def test_from_json_non_object_is_a_value_error_saying_object(self, text):
        with pytest.raises(ValueError) as error:
            Context.from_json(text)
        assert "object" in str(error.value).lower(), str(error.value)


class TestRepr:
    def test_starts_with_context(self):
        text = repr(Context({"greeting": "hello"}))
        assert text.startswith("Context(")
        assert text.endswith(")")
        assert "greeting" in text

    def test_empty(self):
        assert repr(Context()).startswith("Context(")


# --------------------------------------------------------------------------- values JSON cannot hold


class _Opaque:
    pass


NON_JSON_VALUES = [
    # (id, value, type name the message must mention)
    ("object", object(), "object"),
    ("custom-class", _Opaque(), "_Opaque"),
    ("set", {1, 2}, "set"),
    ("frozenset", frozenset({"a"}), "frozenset"),
    ("bytes", b"raw", "bytes"),
    ("bytearray", bytearray(b"raw"), "bytearray"),
    ("complex", 1 + 2j, "complex"),
    ("dict-with-int-key", {1: "one"}, "int"),
    ("nested-bad-value", {"inner": [1, {"deeper": object()}]}, "object"),
    ("bad-value-in-list", [1, "two", b"three"], "bytes"),
    ("nan", float("nan"), "float"),
    ("inf", float("inf"), "float"),
    ("minus-inf", float("-inf"), "float"),
]


def _via_constructor(key, value):
    Context({"fine": 1, key: value})


def _via_set(key, value):
    Context().set(key, value)


def _via_insert(key, value):
    Context().insert(key, value)


def _via_update(key, value):
    Context({key: "old"}).update(key, value)


def _via_setitem(key, value):
    ctx = Context()
    ctx[key] = value


def _via_update_from_dict(key, value):
    Context({"fine": 1}).update_from_dict({key: value})


ENTRY_POINTS = [_via_constructor, _via_set, _via_insert, _via_update, _via_setitem, _via_update_from_dict]


@pytest.mark.parametrize("store", ENTRY_POINTS, ids=lambda f: f.__name__.removeprefix("_via_"))
@pytest.mark.parametrize(
    "value, type_name", [(v, t) for _, v, t in NON_JSON_VALUES], ids=[i for i, _, _ in NON_JSON_VALUES]
)
def test_non_json_value_is_a_type_error_naming_key_and_type(store, value, type_name):
    with pytest.raises(TypeError) as error:
        store("offending_key", value)
    assert_message_names(error, "offending_key", type_name)


@pytest.mark.parametrize(
    "value",
    [2**64, 2**64 + 1, 10**30, -(2**63) - 1, -(10**30)],
    ids=["u64max+1", "u64max+2", "1e30", "i64min-1", "-1e30"],
)
@pytest.mark.parametrize("store", ENTRY_POINTS, ids=lambda f: f.__name__.removeprefix("_via_"))
def test_int_outside_i64_and_u64_is_refused_naming_the_key(store, value):
    with pytest.raises((TypeError, ValueError)) as error:
        store("huge_number", value)
    assert_message_names(error, "huge_number")


def test_failed_set_leaves_the_context_unchanged():
    ctx = Context({"k": "old"})
    with pytest.raises(TypeError):
        ctx.set("k", object())
    with pytest.raises(TypeError):
        ctx["new"] = {1, 2}
    assert ctx.to_dict() == {"k": "old"}


def test_failed_update_leaves_the_old_value():
    ctx = Context({"k": [1, 2]})
    with pytest.raises(TypeError):
        ctx.update("k", b"bytes")
    assert ctx.to_dict() == {"k": [1, 2]}


# --------------------------------------------------------------------------- exact round trip

ROUND_TRIP_VALUES = [
    ("str", "hello"),
    ("empty-str", ""),
    ("accents", "héllo wörld ñ"),
    ("cjk", "日本語のテキスト"),
    ("emoji", "😀🚀 👨‍👩‍👧"),
    ("nul", "a\u0000b"),
    ("controls-and-escapes", 'tab\tnew\nline\r"quoted" back\\slash \u001f \u007f'),
    ("bmp-edge-and-astral", "\ud7ff\ue000\uffff\U00010000\U0010ffff"),
    ("zero", 0),
    ("one", 1),
    ("minus-one", -1),
    ("i64-max", 2**63 - 1),
    ("i64-min", -(2**63)),
    ("i64-max+1", 2**63),
    ("u64-max", 2**64 - 1),
    ("2^53+1", 2**53 + 1),
    ("float-tenth", 0.1),
    ("float-sum", 0.1 + 0.2),
    ("float-third", 1 / 3),
    ("float-integral", 3.0),
    ("float-negative", -2.5),
    ("float-1e308", 1e308),
    ("float-max", sys.float_info.max),
    ("float-min-normal", sys.float_info.min),
    ("float-subnormal", 5e-324),
    ("float-2^53", 2.0**53),
    ("float-1e-7", 1e-7),
    ("float-1e21", 1e21),
    ("minus-zero", -0.0),
    ("true", True),
    ("false", False),
    ("none", None),
    ("empty-list", []),
    ("empty-dict", {}),
    ("nested-empties", {"l": [], "d": {}, "ll": [[]], "ld": [{}], "dd": {"e": {}}}),
    ("bools-stay-bools", [True, False, 1, 0, 1.0, 0.0]),
    ("mixed-list", [1, "two", 3.5, None, False, {"k": [True]}]),
    ("unicode-keys", {"ключ": 1, "😀": 2, "": 3, "a\u0000b": 4, "日本": {"深い": True}}),
    ("deep-lists-100", nested(100, "list")),
    ("deep-dicts-100", nested(100, "dict")),
    ("deep-mixed-100", nested(100, "mixed")),
]


@pytest.fixture(params=[v for _, v in ROUND_TRIP_VALUES], ids=[i for i, _ in ROUND_TRIP_VALUES])
def json_value(request):
    return request.param


class TestExactRoundTrip:
    def test_to_dict(self, json_value):
        assert_same_json(Context({"v": json_value}).to_dict(), {"v": json_value})

    def test_get_after_set(self, json_value):
        ctx = Context()
        ctx.set("v", json_value)
        assert_same_json(ctx.get("v"), json_value)
        assert_same_json(ctx["v"], json_value)

    def test_to_json_then_from_json(self, json_value):
        ctx = Context({"v": json_value})
        assert_same_json(Context.from_json(ctx.to_json()).to_dict(), ctx.to_dict())
        assert_same_json(Context.from_json(ctx.to_json()).to_dict(), {"v": json_value})

    def test_to_json_reads_back_in_python(self, json_value):
        assert_same_json(json.loads(Context({"v": json_value}).to_json()), {"v": json_value})

    @pytest.mark.parametrize("ensure_ascii", [True, False], ids=["ascii-escaped", "utf8"])
    def test_from_json_of_python_json(self, json_value, ensure_ascii):
        text = json.dumps({"v": json_value}, ensure_ascii=ensure_ascii)
        assert_same_json(Context.from_json(text).to_dict(), {"v": json_value})


@pytest.mark.parametrize(
    "key",
    [v for _, v in ROUND_TRIP_VALUES if isinstance(v, str)],
    ids=[i for i, v in ROUND_TRIP_VALUES if isinstance(v, str)],
)
def test_string_round_trips_as_a_key(key):
    ctx = Context({key: "value"})
    assert key in ctx
    assert ctx[key] == "value"
    assert_same_json(Context.from_json(ctx.to_json()).to_dict(), {key: "value"})
    assert_same_json(json.loads(ctx.to_json()), {key: "value"})


def test_round_trip_of_every_value_at_once():
    data = {name: value for name, value in ROUND_TRIP_VALUES}
    ctx = Context(data)
    assert len(ctx) == len(data)
    assert_same_json(Context.from_json(ctx.to_json()).to_dict(), data)


def test_update_from_dict_round_trip():
    data = {name: value for name, value in ROUND_TRIP_VALUES}
    ctx = Context()
    ctx.update_from_dict(data)
    assert_same_json(ctx.to_dict(), data)
