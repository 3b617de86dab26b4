//! `LISTEN/NOTIFY`: runner processes wake each other instead of polling.
//!
//! Each schema's runners have channels of their own (and a migration lock
//! of their own), so tenants never wake or wait for each other.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls};

use super::identifiers::quote_identifier;
use crate::engine::store::records::{Channel, EventHandler};
use crate::engine::sync::lock;

/// Key of the advisory lock that serialises schema migrations across
/// processes, for the default schema.
const MIGRATION_LOCK_KEY: i64 = 0x636c_6f61_6361; // "cloaca"

/// The notification channel names of one store's schema, and the key of
/// its migration lock.
pub(super) struct SchemaScope {
    work: String,
    done: String,
    cancel: String,
    pub(super) migration_lock: i64,
}

impl SchemaScope {
    pub(super) fn new(schema: Option<&str>) -> Self {
        let migration_lock = schema.map_or(MIGRATION_LOCK_KEY, |s| i64::from_be_bytes(schema_digest(s)));
        SchemaScope {
            work: channel_name(Channel::Work, schema),
            done: channel_name(Channel::Done, schema),
            cancel: channel_name(Channel::Cancel, schema),
            migration_lock,
        }
    }

    pub(super) fn name(&self, channel: Channel) -> &str {
        match channel {
            Channel::Work => &self.work,
            Channel::Done => &self.done,
            Channel::Cancel => &self.cancel,
        }
    }
}

/// The channel's name for the tables of `schema` (the default schema when None).
pub(crate) fn channel_name(channel: Channel, schema: Option<&str>) -> String {
    let base = match channel {
        Channel::Work => "cloaca_work",
        Channel::Done => "cloaca_done",
        Channel::Cancel => "cloaca_cancel",
    };
    match schema {
        None => base.to_string(),
        // A schema name may be 63 characters, as long as a channel name
        // may be: a short digest of it keeps every name within the limit.
        Some(schema) => {
            let hex: String = schema_digest(schema).iter().map(|b| format!("{b:02x}")).collect();
            format!("{base}_{hex}")
        }
    }
}

/// Eight bytes of SHA-256 of a schema name: what keys its notification
/// channels and its migration lock apart from other schemas'.
fn schema_digest(schema: &str) -> [u8; 8] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(schema.as_bytes());
    digest[..8].try_into().expect("eight bytes")
}

pub(super) fn subscribe(client: &mut Client, scope: &SchemaScope) -> Result<(), postgres::Error> {
    client.batch_execute(&format!(
        "LISTEN {}; LISTEN {}; LISTEN {};",
        quote_identifier(&scope.work),
        quote_identifier(&scope.done),
        quote_identifier(&scope.cancel)
    ))
}

/// Delivers notifications until `stop`; reconnects when the connection drops
/// (waking the workers so that nothing missed meanwhile is left waiting).
pub(super) fn listen_loop(
    mut client: Client,
    config: Config,
    scope: Arc<SchemaScope>,
    on_event: EventHandler,
    own: Arc<Mutex<HashSet<i32>>>,
    stop: Arc<AtomicBool>,
) {
    // The timeout only bounds how long a stop request waits; notifications
    // are delivered the moment they arrive.
    const STOP_CHECK: Duration = Duration::from_millis(200);
    while !stop.load(Ordering::SeqCst) {
        let mut healthy = true;
        {
            let mut notifications = client.notifications();
            let mut iter = notifications.timeout_iter(STOP_CHECK);
            loop {
                // Checked at every notification too: while other processes
                // keep notifying, the iterator never times out, and a stop
                // would otherwise wait for a quiet moment that may not come.
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match iter.next() {
                    Ok(Some(n)) => {
                        if lock(&own).contains(&n.process_id()) {
                            continue;
                        }
                        let channel = match n.channel() {
                            c if c == scope.done => Channel::Done,
                            c if c == scope.cancel => Channel::Cancel,
                            _ => Channel::Work,
                        };
                        on_event(channel, n.payload());
                    }
                    Ok(None) => break,
                    Err(_) => {
                        healthy = false;
                        break;
                    }
                }
            }
        }
        if healthy && !client.is_closed() {
            continue;
        }
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
            if let Ok(mut fresh) = config.connect(NoTls) {
                if subscribe(&mut fresh, &scope).is_ok() {
                    client = fresh;
                    on_event(Channel::Work, "");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use crate::engine::store::Store;
    use crate::engine::time::now_ms;
    use crate::engine::url::{test_database_url, DatabaseUrl};

    /// Another process that notifies more often than the stop check's
    /// timeout must not keep a stopping listener alive.
    #[test]
    fn a_listener_stops_while_another_process_keeps_notifying() {
        let url = test_database_url();
        let store = Store::open(&DatabaseUrl::parse(&url).unwrap(), None, 1, Duration::ZERO, now_ms()).unwrap();
        let heard = Arc::new(AtomicUsize::new(0));
        let counter = heard.clone();
        let on_event: EventHandler = Arc::new(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let stop = Arc::new(AtomicBool::new(false));
        let listener = store.listen(on_event, stop.clone()).unwrap().expect("postgres listens");
        let notifying = Arc::new(AtomicBool::new(true));
        let keep_on = notifying.clone();
        let mut other = Client::connect(&url, NoTls).unwrap();
        let notifier = std::thread::spawn(move || {
            while keep_on.load(Ordering::SeqCst) {
                other.batch_execute("NOTIFY cloaca_work, '1'").unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while heard.load(Ordering::SeqCst) < 5 {
            assert!(Instant::now() < deadline, "the listener heard nothing");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        let stopped = Instant::now() + Duration::from_secs(30);
        while !listener.is_finished() && Instant::now() < stopped {
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished = listener.is_finished();
        notifying.store(false, Ordering::SeqCst);
        notifier.join().unwrap();
        assert!(finished, "the listener went on while notifications kept arriving");
        listener.join().unwrap();
    }
}
