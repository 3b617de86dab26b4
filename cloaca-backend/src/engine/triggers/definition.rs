//! What a trigger is, as the process defines it: a name, the workflow it
//! starts, its form (polled every interval, or a cron expression) and the
//! poll function; and the process-wide list of definitions that runners read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::engine::model::Context;
use crate::engine::sync::lock;
use crate::engine::time::rfc3339;

/// The interval of a poll trigger that gives none.
pub(crate) const DEFAULT_POLL_INTERVAL: &str = "30s";

/// The context hash of a fire without a context.
pub(crate) const NO_CONTEXT_HASH: &str = "fire_no_context";

/// What one poll said.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PollOutcome {
    /// The condition is not met.
    Skip,
    /// Start the workflow, with this context (or none).
    Fire(Option<Context>),
}

/// The poll function of a trigger. An `Err` is a poll error, its message
/// what went wrong.
pub(crate) trait TriggerPoll: Send + Sync {
    fn poll(&self) -> Result<PollOutcome, String>;
}

/// How a trigger comes to fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TriggerForm {
    /// Its function is polled every `interval_ms`.
    Poll { interval_ms: i64 },
    /// It is a cron schedule of its workflow; its function is never polled.
    Cron { expression: String, timezone: String },
}

/// One `@trigger` definition.
pub(crate) struct TriggerDef {
    pub(crate) name: String,
    /// The workflow a fire starts.
    pub(crate) on: Option<String>,
    pub(crate) form: TriggerForm,
    pub(crate) allow_concurrent: bool,
    pub(crate) poll: Arc<dyn TriggerPoll>,
}

/// Every trigger defined in this process, in definition order; names are
/// not de-duplicated here (the later of two equal names wins where they are used).
#[derive(Default)]
pub(crate) struct Definitions {
    list: Mutex<Vec<Arc<TriggerDef>>>,
    generation: AtomicU64,
}

impl Definitions {
    /// The list `@cloaca.trigger` appends to.
    pub(crate) fn global() -> &'static Definitions {
        static GLOBAL: OnceLock<Definitions> = OnceLock::new();
        GLOBAL.get_or_init(Definitions::default)
    }

    pub(crate) fn define(&self, definition: TriggerDef) {
        lock(&self.list).push(Arc::new(definition));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes with every definition: a reader compares it with the one it saw.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The definition in force for each name (the latest), in order of
    /// their first definition, and the names defined more than once.
    pub(crate) fn resolve(&self) -> (Vec<Arc<TriggerDef>>, Vec<String>) {
        resolve(&lock(&self.list))
    }
}

fn resolve(list: &[Arc<TriggerDef>]) -> (Vec<Arc<TriggerDef>>, Vec<String>) {
    let mut in_force: Vec<Arc<TriggerDef>> = Vec::new();
    let mut repeated = Vec::new();
    for definition in list {
        match in_force.iter_mut().find(|d| d.name == definition.name) {
            Some(earlier) => {
                *earlier = definition.clone();
                if !repeated.contains(&definition.name) {
                    repeated.push(definition.name.clone());
                }
            }
            None => in_force.push(definition.clone()),
        }
    }
    (in_force, repeated)
}

/// Parses `<non-negative integer><unit>` (unit `ms`, `s`, `m` or `h`, with
/// surrounding whitespace ignored) into milliseconds; the error is the
/// message to raise.
pub(crate) fn parse_poll_interval(text: &str) -> Result<i64, String> {
    let refuse = || {
        format!(
            "Invalid poll_interval '{text}': use a whole number followed by a unit, ms, s, m or h \
             (e.g. \"500ms\", \"30s\", \"5m\", \"1h\"; \"0s\" is accepted)"
        )
    };
    let trimmed = text.trim();
    let digits = trimmed.chars().take_while(char::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let factor: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(refuse()),
    };
    let number: i64 = number.parse().map_err(|_| refuse())?;
    number.checked_mul(factor).ok_or_else(refuse)
}

/// The hash that makes two fires equal for `allow_concurrent=False`:
/// [`NO_CONTEXT_HASH`] without a context, else the hex SHA-256 of the
/// context's canonical JSON (keys sorted at every level, no whitespace).
pub(crate) fn context_hash(context: Option<&Context>) -> String {
    let Some(context) = context else { return NO_CONTEXT_HASH.to_string() };
    let digest = Sha256::digest(canonical_json(&serde_json::Value::Object(context.clone())).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        scalar => scalar.to_string(),
    }
}

/// The input of a fire's execution: the fire's context (or nothing) with
/// `trigger_name` and `triggered_at`, which override keys of the same name.
pub(crate) fn fire_input(context: Option<&Context>, trigger_name: &str, fired_at: i64) -> Context {
    let mut input = context.cloned().unwrap_or_default();
    input.insert("trigger_name".into(), trigger_name.into());
    input.insert("triggered_at".into(), rfc3339(fired_at).into());
    input
}

/// The id of the cron schedule a cron-form trigger registers: derived from
/// its name, so that registering it again (any process, any restart)
/// finds the same schedule. Shaped as a UUID, as schedule ids are.
pub(crate) fn cron_schedule_id(trigger_name: &str) -> String {
    let digest = Sha256::digest(format!("cloaca trigger {trigger_name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Version 8 (custom), RFC 4122 variant.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;
    impl TriggerPoll for Never {
        fn poll(&self) -> Result<PollOutcome, String> {
            Ok(PollOutcome::Skip)
        }
    }

    fn def(name: &str, on: &str) -> Arc<TriggerDef> {
        Arc::new(TriggerDef {
            name: name.into(),
            on: Some(on.into()),
            form: TriggerForm::Poll { interval_ms: 1000 },
            allow_concurrent: false,
            poll: Arc::new(Never),
        })
    }

    #[test]
    fn poll_intervals_take_a_whole_number_and_a_unit() {
        for (text, ms) in [("30s", 30_000), ("0s", 0), (" 250ms ", 250), ("5m", 300_000), ("2h", 7_200_000), ("0ms", 0)] {
            assert_eq!(parse_poll_interval(text), Ok(ms), "{text:?}");
        }
        for bad in ["1.5s", "10", "s", "", "-1s", "5d", "5 s", "5S", "1e3ms", "99999999999999999999h"] {
            let message = parse_poll_interval(bad).unwrap_err();
            assert!(message.contains(&format!("Invalid poll_interval '{bad}'")), "{message}");
        }
    }

    #[test]
    fn the_context_hash_is_the_sha256_of_canonical_json() {
        assert_eq!(context_hash(None), "fire_no_context");
        let a: Context = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Context = serde_json::from_str(r#"{"a": {"x": null, "y": [1, 2]}, "b": 1}"#).unwrap();
        assert_eq!(context_hash(Some(&a)), context_hash(Some(&b)), "key order does not count");
        assert_eq!(canonical_json(&serde_json::Value::Object(a.clone())), r#"{"a":{"x":null,"y":[1,2]},"b":1}"#);
        // sha256('{}')
        assert_eq!(context_hash(Some(&Context::new())), "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        let c: Context = serde_json::from_str(r#"{"b": 1.0, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        assert_ne!(context_hash(Some(&a)), context_hash(Some(&c)), "1 and 1.0 differ");
    }

    #[test]
    fn a_fire_input_carries_the_trigger_keys_over_the_context() {
        let context: Context = serde_json::from_str(r#"{"trigger_name": "mine", "file": "a.csv"}"#).unwrap();
        let input = fire_input(Some(&context), "watch", 0);
        assert_eq!(input["trigger_name"], "watch");
        assert_eq!(input["triggered_at"], "1970-01-01T00:00:00.000+00:00");
        assert_eq!(input["file"], "a.csv");
        assert_eq!(fire_input(None, "watch", 0).len(), 2);
    }

    #[test]
    fn the_latest_definition_of_a_name_is_in_force() {
        let (in_force, repeated) = resolve(&[def("a", "w1"), def("b", "w2"), def("a", "w3")]);
        let seen: Vec<(&str, &str)> = in_force.iter().map(|d| (d.name.as_str(), d.on.as_deref().unwrap())).collect();
        assert_eq!(seen, [("a", "w3"), ("b", "w2")]);
        assert_eq!(repeated, ["a"]);
    }

    #[test]
    fn a_cron_trigger_always_gets_the_same_schedule_id() {
        let id = cron_schedule_id("nightly");
        assert_eq!(id, cron_schedule_id("nightly"));
        assert_ne!(id, cron_schedule_id("hourly"));
        assert!(uuid::Uuid::try_parse(&id).is_ok(), "{id}");
    }
}
