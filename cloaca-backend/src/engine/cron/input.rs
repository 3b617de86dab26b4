//! What a tick's execution receives: the params of its schedule (a named
//! workflow instance's snapshot), then the keys every tick sets, ours and
//! the original bindings'. Plain data, used by the store when it fires a
//! tick and by [`super::Schedules`] when it accepts an instance's params.

use crate::engine::error::{Error, Result};
use crate::engine::model::Context;
use crate::engine::time::rfc3339;

/// The keys every tick sets: ours, then the four the original bindings'
/// scheduler sets, which their tasks read.
const TICK_KEYS: [&str; 6] =
    ["cron_schedule_id", "cron_scheduled_time", "scheduled_time", "schedule_id", "schedule_timezone", "schedule_expression"];

/// Param names an instance may not use: the tick keys, and the two an event
/// trigger's fire sets (a workflow may be started both ways).
pub(crate) const RESERVED_PARAMS: &[&str] = &[
    "cron_schedule_id",
    "cron_scheduled_time",
    "scheduled_time",
    "schedule_id",
    "schedule_timezone",
    "schedule_expression",
    "trigger_name",
    "triggered_at",
];

/// The schedule a tick belongs to, as far as its input is concerned.
pub(crate) struct TickSource<'a> {
    pub(crate) schedule_id: &'a str,
    pub(crate) cron_expression: &'a str,
    pub(crate) timezone: &'a str,
    pub(crate) params: Option<&'a Context>,
}

/// The input of the execution the tick at `scheduled_time` starts. The tick
/// keys are set after the params, so they win over a param of the same name
/// (which registration refuses, but a row edited by hand may hold).
pub(crate) fn tick_input(source: &TickSource<'_>, scheduled_time: i64) -> Context {
    let mut input = source.params.cloned().unwrap_or_default();
    let time = rfc3339(scheduled_time);
    let values = [source.schedule_id, &time, &time, source.schedule_id, source.timezone, source.cron_expression];
    for (key, value) in TICK_KEYS.iter().zip(values) {
        input.insert((*key).into(), value.into());
    }
    input
}

/// Refuses params an instance cannot carry: a reserved name, or a secret
/// reference (`{"$secret": ...}`), which would reach the task unresolved.
pub(crate) fn check_params(params: &Context) -> Result<()> {
    for (key, value) in params {
        if RESERVED_PARAMS.contains(&key.as_str()) {
            return Err(Error::ReservedParam { key: key.clone(), reserved: RESERVED_PARAMS });
        }
        if value.as_object().is_some_and(|object| object.contains_key("$secret")) {
            return Err(Error::SecretParam { key: key.clone() });
        }
    }
    Ok(())
}

/// Refuses an instance name that cannot name one (empty, blank, or holding
/// NUL, which PostgreSQL cannot store).
pub(crate) fn check_instance_name(workflow_name: &str, instance_name: &str) -> Result<()> {
    if instance_name.trim().is_empty() || instance_name.contains('\0') {
        return Err(Error::InvalidInstanceName { workflow_name: workflow_name.into(), instance_name: instance_name.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(value: serde_json::Value) -> Context {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_tick_gets_the_params_then_every_tick_key() {
        let params = context(json!({"region": "eu", "batch": 3, "scheduled_time": "kept out"}));
        let source = TickSource { schedule_id: "s-1", cron_expression: "0 3 * * *", timezone: "Europe/Berlin", params: Some(&params) };
        let input = tick_input(&source, 0);
        let time = "1970-01-01T00:00:00.000+00:00";
        assert_eq!(
            serde_json::Value::Object(input),
            json!({
                "region": "eu", "batch": 3,
                "cron_schedule_id": "s-1", "cron_scheduled_time": time,
                "scheduled_time": time, "schedule_id": "s-1",
                "schedule_timezone": "Europe/Berlin", "schedule_expression": "0 3 * * *",
            })
        );
        let anonymous = TickSource { params: None, ..source };
        assert_eq!(tick_input(&anonymous, 0).len(), TICK_KEYS.len());
    }

    #[test]
    fn reserved_names_and_secret_references_are_refused_naming_the_key() {
        assert!(check_params(&context(json!({"region": "eu", "nested": {"secret": 1}}))).is_ok());
        for key in RESERVED_PARAMS {
            let error = check_params(&context(json!({ *key: 1 }))).unwrap_err();
            assert!(error.to_string().contains(&format!("{key:?}")), "{error}");
        }
        let error = check_params(&context(json!({"token": {"$secret": "api"}}))).unwrap_err();
        assert!(error.to_string().contains("\"token\"") && error.to_string().contains("$secret"), "{error}");
        assert!(TICK_KEYS.iter().all(|k| RESERVED_PARAMS.contains(k)));
    }

    #[test]
    fn an_empty_blank_or_nul_instance_name_is_refused() {
        assert!(check_instance_name("w", "eu-nightly").is_ok());
        for name in ["", "  ", "a\0b"] {
            let error = check_instance_name("w", name).unwrap_err();
            assert!(error.to_string().contains(&format!("instance_name={name:?}")), "{error}");
        }
    }
}
