//! Trigger rules: when a task whose dependencies have all finished runs, or
//! is skipped instead.
//!
//! A rule is decided once, in the transaction that finishes its task's last
//! dependency (for a root, the one that creates the execution), against the
//! input the task would receive and the states of the tasks it names. Its
//! JSON form is the one `@cloaca.task(trigger_rules=...)` accepts; its
//! canonical text is part of the workflow version.

use std::fmt;

use serde_json::{json, Value};

use crate::engine::model::Context;

/// A comparison of one context key with a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operator {
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    Contains,
    NotContains,
    Exists,
    NotExists,
}

impl Operator {
    pub(crate) const ALL: [Operator; 8] = [
        Self::Equals,
        Self::NotEquals,
        Self::GreaterThan,
        Self::LessThan,
        Self::Contains,
        Self::NotContains,
        Self::Exists,
        Self::NotExists,
    ];

    /// The canonical spelling, as stored and as raw rule dicts must give it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operator::Equals => "Equals",
            Operator::NotEquals => "NotEquals",
            Operator::GreaterThan => "GreaterThan",
            Operator::LessThan => "LessThan",
            Operator::Contains => "Contains",
            Operator::NotContains => "NotContains",
            Operator::Exists => "Exists",
            Operator::NotExists => "NotExists",
        }
    }

    /// The operator of a canonical name, exactly as spelled.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// `context_value`'s reading: lower case, underscores removed, then a
    /// name or one of its aliases (`==`, `eq`, `!=`, `ne`, `>`, `gt`, `<`, `lt`).
    pub(crate) fn from_alias(given: &str) -> Option<Self> {
        let normalised: String = given.to_lowercase().chars().filter(|&c| c != '_').collect();
        let op = match normalised.as_str() {
            "equals" | "==" | "eq" => Operator::Equals,
            "notequals" | "!=" | "ne" => Operator::NotEquals,
            "greaterthan" | ">" | "gt" => Operator::GreaterThan,
            "lessthan" | "<" | "lt" => Operator::LessThan,
            "contains" => Operator::Contains,
            "notcontains" => Operator::NotContains,
            "exists" => Operator::Exists,
            "notexists" => Operator::NotExists,
            _ => return None,
        };
        Some(op)
    }

    /// The canonical names, for error messages.
    pub(crate) fn accepted() -> String {
        Self::ALL.iter().map(|op| op.name()).collect::<Vec<_>>().join(", ")
    }

    fn holds(self, actual: Option<&Value>, expected: &Value) -> bool {
        match self {
            Operator::Exists => actual.is_some(),
            Operator::NotExists => actual.is_none(),
            Operator::Equals => actual.is_some_and(|a| a == expected),
            Operator::NotEquals => !Operator::Equals.holds(actual, expected),
            Operator::GreaterThan | Operator::LessThan => match (actual.and_then(Value::as_f64), expected.as_f64()) {
                (Some(a), Some(e)) if self == Operator::GreaterThan => a > e,
                (Some(a), Some(e)) => a < e,
                _ => false,
            },
            Operator::Contains => match (actual, expected) {
                (Some(Value::String(a)), Value::String(e)) => a.contains(e.as_str()),
                (Some(Value::Array(items)), e) => items.iter().any(|item| item == e),
                _ => false,
            },
            Operator::NotContains => !Operator::Contains.holds(actual, expected),
        }
    }
}

/// What a task-state condition can see of the task it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Not finished yet (or cancelled): every task-state condition is false.
    Unfinished,
    Completed,
    Failed,
    Skipped,
}

/// One test a rule combines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Condition {
    TaskSuccess(String),
    TaskFailed(String),
    TaskSkipped(String),
    ContextValue { key: String, operator: Operator, value: Value },
}

impl Condition {
    fn task(&self) -> Option<&str> {
        match self {
            Condition::TaskSuccess(t) | Condition::TaskFailed(t) | Condition::TaskSkipped(t) => Some(t),
            Condition::ContextValue { .. } => None,
        }
    }

    fn holds(&self, context: &Context, state_of: &mut dyn FnMut(&str) -> TaskState) -> bool {
        match self {
            Condition::TaskSuccess(t) => state_of(t) == TaskState::Completed,
            Condition::TaskFailed(t) => state_of(t) == TaskState::Failed,
            Condition::TaskSkipped(t) => state_of(t) == TaskState::Skipped,
            Condition::ContextValue { key, operator, value } => operator.holds(context.get(key), value),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Condition::TaskSuccess(t) => json!({"type": "TaskSuccess", "task_name": t}),
            Condition::TaskFailed(t) => json!({"type": "TaskFailed", "task_name": t}),
            Condition::TaskSkipped(t) => json!({"type": "TaskSkipped", "task_name": t}),
            Condition::ContextValue { key, operator, value } => {
                json!({"type": "ContextValue", "key": key, "operator": operator.name(), "value": value})
            }
        }
    }

    fn from_json(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or_else(|| format!("a condition must be a dict, got {value}"))?;
        let kind = object.get("type").and_then(Value::as_str).unwrap_or_default();
        let text = |key: &str| -> Result<String, String> {
            object
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("a {kind} condition needs {key:?} as a str, got {value}"))
        };
        match kind {
            "TaskSuccess" => Ok(Condition::TaskSuccess(task_id_of(&text("task_name")?))),
            "TaskFailed" => Ok(Condition::TaskFailed(task_id_of(&text("task_name")?))),
            "TaskSkipped" => Ok(Condition::TaskSkipped(task_id_of(&text("task_name")?))),
            "ContextValue" => {
                let key = text("key")?;
                let name = text("operator")?;
                let operator = Operator::from_name(&name).ok_or_else(|| {
                    format!("unknown operator {name:?} in a raw ContextValue condition; give one of {}", Operator::accepted())
                })?;
                let value = object.get("value").cloned().ok_or_else(|| format!("a ContextValue condition needs \"value\", got {value}"))?;
                Ok(Condition::ContextValue { key, operator, value })
            }
            "All" | "Any" | "None" | "Always" => Err(format!("combinators cannot be nested: {value}")),
            _ => Err(format!(
                "unknown condition type {kind:?} in {value}; a condition is TaskSuccess, TaskFailed, TaskSkipped or ContextValue"
            )),
        }
    }
}

/// The task id a condition names: the part after the last `::`, so that a
/// fully namespaced name (`tenant::package::workflow::task`) works too.
fn task_id_of(name: &str) -> String {
    name.rsplit("::").next().unwrap_or(name).to_string()
}

/// How a rule combines its conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Combinator {
    All,
    Any,
    None,
}

impl Combinator {
    fn name(self) -> &'static str {
        match self {
            Combinator::All => "All",
            Combinator::Any => "Any",
            Combinator::None => "None",
        }
    }
}

/// A task's rule: `Always`, or conditions combined by all / any / none.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TriggerRule {
    Always,
    Combined(Combinator, Vec<Condition>),
}

impl TriggerRule {
    /// Reads a rule from its JSON form; a bare condition means "all of it".
    /// The error says what is wrong with the value.
    pub(crate) fn from_json(value: &Value) -> Result<Self, String> {
        let object = value.as_object().ok_or_else(|| format!("a rule must be a dict, got {value}"))?;
        let kind = object.get("type").and_then(Value::as_str).unwrap_or_default();
        let combinator = match kind {
            "Always" => return Ok(TriggerRule::Always),
            "All" => Combinator::All,
            "Any" => Combinator::Any,
            "None" => Combinator::None,
            "TaskSuccess" | "TaskFailed" | "TaskSkipped" | "ContextValue" => {
                return Ok(TriggerRule::Combined(Combinator::All, vec![Condition::from_json(value)?]));
            }
            _ => {
                return Err(format!(
                    "unknown rule type {kind:?} in {value}; a rule is always(), all_of(...), any_of(...), none_of(...) \
                     or one condition"
                ))
            }
        };
        let conditions = object
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("a {kind} rule needs \"conditions\" as a list, got {value}"))?;
        let conditions = conditions.iter().map(Condition::from_json).collect::<Result<Vec<_>, _>>()?;
        Ok(TriggerRule::Combined(combinator, conditions))
    }

    /// The JSON form, with canonical names.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            TriggerRule::Always => json!({"type": "Always"}),
            TriggerRule::Combined(c, conditions) => {
                json!({"type": c.name(), "conditions": conditions.iter().map(Condition::to_json).collect::<Vec<_>>()})
            }
        }
    }

    /// The JSON text with sorted keys and no whitespace: what the workflow
    /// version hashes. (serde_json's maps keep keys sorted.)
    pub(crate) fn canonical(&self) -> String {
        self.to_json().to_string()
    }

    /// The task ids the rule's conditions name, in order, once each.
    pub(crate) fn referenced_tasks(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        if let TriggerRule::Combined(_, conditions) = self {
            for name in conditions.iter().filter_map(Condition::task) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Whether the task runs, given its input and the states of the tasks
    /// the rule names. Conditions are tried left to right and stop as soon
    /// as the answer is known.
    pub(crate) fn evaluate(&self, context: &Context, state_of: &mut dyn FnMut(&str) -> TaskState) -> bool {
        match self {
            TriggerRule::Always => true,
            TriggerRule::Combined(Combinator::All, cs) => cs.iter().all(|c| c.holds(context, state_of)),
            TriggerRule::Combined(Combinator::Any, cs) => cs.iter().any(|c| c.holds(context, state_of)),
            TriggerRule::Combined(Combinator::None, cs) => !cs.iter().any(|c| c.holds(context, state_of)),
        }
    }
}

impl fmt::Display for TriggerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Why a task was skipped, as stored and as `TaskRecord.skip_reason` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// Its own trigger rule was false.
    TriggerRule,
    /// A dependency failed, or was skipped for this reason (default rule only).
    UpstreamFailed,
    /// Its execution was stopped (pipeline timeout, or an unrunnable execution).
    Stopped,
}

impl SkipReason {
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            SkipReason::TriggerRule => "trigger_rule",
            SkipReason::UpstreamFailed => "upstream_failed",
            SkipReason::Stopped => "stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(value: Value) -> Context {
        value.as_object().unwrap().clone()
    }

    fn holds(op: Operator, actual: Value, expected: Value) -> bool {
        op.holds(actual.as_object().unwrap().get("k"), &expected)
    }

    #[test]
    fn aliases_are_read_case_and_underscore_blind() {
        for (given, op) in [
            ("EQUALS", Operator::Equals),
            ("==", Operator::Equals),
            ("eq", Operator::Equals),
            ("not_equals", Operator::NotEquals),
            ("!=", Operator::NotEquals),
            ("NE", Operator::NotEquals),
            ("Greater_Than", Operator::GreaterThan),
            ("GT", Operator::GreaterThan),
            (">", Operator::GreaterThan),
            ("less_than", Operator::LessThan),
            ("<", Operator::LessThan),
            ("lt", Operator::LessThan),
            ("Contains", Operator::Contains),
            ("not_contains", Operator::NotContains),
            ("EXISTS", Operator::Exists),
            ("Not_Exists", Operator::NotExists),
        ] {
            assert_eq!(Operator::from_alias(given), Some(op), "{given}");
        }
        for refused in [">=", "<=", "=", "in", "bogus"] {
            assert_eq!(Operator::from_alias(refused), None, "{refused}");
        }
        assert_eq!(Operator::from_name("equals"), None, "raw dicts need the canonical name");
    }

    #[test]
    fn operators_compare_as_documented() {
        assert!(holds(Operator::Exists, json!({"k": null}), json!(0)));
        assert!(!holds(Operator::Exists, json!({}), json!(0)));
        assert!(holds(Operator::NotExists, json!({}), json!(0)));
        assert!(holds(Operator::Equals, json!({"k": 1}), json!(1)));
        assert!(!holds(Operator::Equals, json!({"k": 1}), json!(1.0)), "1 and 1.0 differ");
        assert!(!holds(Operator::Equals, json!({"k": true}), json!(1)), "true and 1 differ");
        assert!(holds(Operator::Equals, json!({"k": {"a": [1, 2]}}), json!({"a": [1, 2]})));
        assert!(holds(Operator::NotEquals, json!({}), json!(1)), "absent is not equal");
        assert!(holds(Operator::GreaterThan, json!({"k": 2}), json!(1.5)));
        assert!(!holds(Operator::GreaterThan, json!({"k": "2"}), json!(1)), "strings are not numbers");
        assert!(holds(Operator::LessThan, json!({"k": -1.5}), json!(0)));
        assert!(!holds(Operator::LessThan, json!({}), json!(0)));
        assert!(holds(Operator::Contains, json!({"k": "hello"}), json!("ell")));
        assert!(holds(Operator::Contains, json!({"k": [1, "a"]}), json!("a")));
        assert!(!holds(Operator::Contains, json!({"k": [1.0]}), json!(1)));
        assert!(!holds(Operator::Contains, json!({"k": {"a": 1}}), json!("a")), "object keys are not searched");
        assert!(holds(Operator::NotContains, json!({"k": 5}), json!(5)), "types that do not fit");
        assert!(holds(Operator::NotContains, json!({}), json!("x")));
    }

    #[test]
    fn combinators_and_empty_combinators() {
        let none = &mut |_: &str| TaskState::Unfinished;
        let c = ctx(json!({"x": 1}));
        let parse = |v: Value| TriggerRule::from_json(&v).unwrap();
        assert!(parse(json!({"type": "All", "conditions": []})).evaluate(&c, none));
        assert!(parse(json!({"type": "None", "conditions": []})).evaluate(&c, none));
        assert!(!parse(json!({"type": "Any", "conditions": []})).evaluate(&c, none));
        let x_is_1 = json!({"type": "ContextValue", "key": "x", "operator": "Equals", "value": 1});
        assert_eq!(parse(x_is_1.clone()), TriggerRule::Combined(Combinator::All, vec![Condition::from_json(&x_is_1).unwrap()]));
        assert!(parse(x_is_1.clone()).evaluate(&c, none));
        assert!(!parse(json!({"type": "None", "conditions": [x_is_1]})).evaluate(&c, none));
    }

    #[test]
    fn task_conditions_read_states_by_id_and_stop_early() {
        let rule = TriggerRule::from_json(&json!({"type": "Any", "conditions": [
            {"type": "TaskFailed", "task_name": "public::embedded::wf::pull"},
            {"type": "TaskSkipped", "task_name": "other"},
        ]}))
        .unwrap();
        assert_eq!(rule.referenced_tasks(), ["pull", "other"]);
        let mut asked = Vec::new();
        let ran = rule.evaluate(&Context::new(), &mut |t| {
            asked.push(t.to_string());
            TaskState::Failed
        });
        assert!(ran);
        assert_eq!(asked, ["pull"], "any_of stops at the first true condition");
    }

    #[test]
    fn shapes_that_are_refused_say_why() {
        for (value, says) in [
            (json!([{"type": "Always"}]), "must be a dict"),
            (json!({"type": "All", "conditions": [{"type": "Any", "conditions": []}]}), "cannot be nested"),
            (json!({"type": "All"}), "\"conditions\""),
            (json!({"type": "TaskSuccess"}), "\"task_name\""),
            (json!({"type": "TaskSuccess", "task_name": 3}), "\"task_name\""),
            (json!({"type": "ContextValue", "key": "k", "operator": "eq", "value": 1}), "unknown operator \"eq\""),
            (json!({"type": "ContextValue", "key": "k", "operator": "Equals"}), "\"value\""),
            (json!({"type": "Sometimes"}), "unknown rule type \"Sometimes\""),
        ] {
            let error = TriggerRule::from_json(&value).unwrap_err();
            assert!(error.contains(says), "{value}: {error}");
        }
    }

    #[test]
    fn canonical_text_has_sorted_keys_and_no_whitespace() {
        let rule = TriggerRule::from_json(
            &json!({"type": "ContextValue", "value": {"b": 1, "a": 2}, "operator": "Exists", "key": "k", "extra": 1}),
        )
        .unwrap();
        assert_eq!(
            rule.canonical(),
            r#"{"conditions":[{"key":"k","operator":"Exists","type":"ContextValue","value":{"a":2,"b":1}}],"type":"All"}"#
        );
    }
}
