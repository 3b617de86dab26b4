//! The trigger threads of a runner.
//!
//! One thread ([`TriggerService::coordinate`]) reads the process's trigger
//! definitions at start and again every second, registers each in the
//! database and starts one poller thread per poll trigger. A poller
//! competes for its trigger's lease; only the holder polls. The poll
//! function itself runs on a thread of its own, so that the poller renews
//! the lease while it runs and abandons it after [`POLL_LIMIT`], and so that
//! one trigger's slow poll never delays another's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::definition::{context_hash, cron_schedule_id, fire_input, Definitions, PollOutcome, TriggerDef, TriggerForm};
use crate::engine::cron::CronSchedule;
use crate::engine::error::Result;
use crate::engine::runner::shared::{Level, Shared, Topic};
use crate::engine::store::{Fire, FireOutcome, Registration, ScheduleRecord, Store};
use crate::engine::sync::{lock, wait_timeout};
use crate::engine::time::now_ms;

/// How often definitions made after the runner started are looked for, and
/// the longest a poller sleeps before it looks at its trigger again.
pub(crate) const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// A poll still running after this is abandoned and counts as an error.
pub(crate) const POLL_LIMIT: Duration = Duration::from_secs(30);
/// Intervals below this count as this.
pub(crate) const MIN_INTERVAL_MS: i64 = 100;

/// The trigger threads of one runner.
pub(crate) struct TriggerService {
    shared: Arc<Shared>,
    definitions: &'static Definitions,
    state: Mutex<State>,
    /// Signalled on stop and when a poll returns.
    changed: Condvar,
    /// [`POLL_LIMIT`], shorter in tests.
    poll_limit: Duration,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// The definition in force for each poll trigger with a poller.
    in_force: HashMap<String, Arc<TriggerDef>>,
    pollers: Vec<JoinHandle<()>>,
}

/// A poll running on its own thread; the thread fills `result`.
struct InFlight {
    result: Arc<Mutex<Option<std::result::Result<PollOutcome, String>>>>,
    started_ms: i64,
    started: Instant,
}

impl TriggerService {
    pub(crate) fn new(shared: Arc<Shared>, definitions: &'static Definitions) -> Arc<Self> {
        Self::with_poll_limit(shared, definitions, POLL_LIMIT)
    }

    pub(crate) fn with_poll_limit(shared: Arc<Shared>, definitions: &'static Definitions, poll_limit: Duration) -> Arc<Self> {
        Arc::new(TriggerService { shared, definitions, state: Mutex::new(State::default()), changed: Condvar::new(), poll_limit })
    }

    /// Starts the coordinating thread.
    pub(crate) fn start(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let service = self.clone();
        std::thread::Builder::new().name("cloaca-triggers".into()).spawn(move || service.coordinate())
    }

    /// Stops every trigger thread: pollers release their leases at once.
    pub(crate) fn stop(&self) {
        lock(&self.state).stopping = true;
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        lock(&self.state).stopping
    }

    /// Sleeps up to `wait`, or until stopped or a poll returns.
    fn sleep(&self, wait: Duration) {
        let state = lock(&self.state);
        if !state.stopping {
            drop(wait_timeout(&self.changed, state, wait));
        }
    }

    fn coordinate(self: Arc<Self>) {
        let mut seen = None;
        let mut warned: HashSet<String> = HashSet::new();
        let mut registered_cron: HashSet<String> = HashSet::new();
        while !self.stopping() {
            let generation = self.definitions.generation();
            if seen != Some(generation) && self.take_definitions(&mut warned, &mut registered_cron) {
                seen = Some(generation);
            }
            self.sleep(LOOK_AGAIN);
        }
        let pollers = std::mem::take(&mut lock(&self.state).pollers);
        for poller in pollers {
            let _ = poller.join();
        }
    }

    /// Registers every definition in force and starts the missing pollers;
    /// false when a registration failed (it is tried again next time).
    fn take_definitions(self: &Arc<Self>, warned: &mut HashSet<String>, registered_cron: &mut HashSet<String>) -> bool {
        let (in_force, repeated) = self.definitions.resolve();
        for name in repeated {
            if warned.insert(format!("repeated {name}")) {
                self.shared.announce(
                    Level::Warning,
                    format!("trigger {name:?} is defined more than once in this process; the latest definition is used"),
                );
            }
        }
        let mut complete = true;
        for definition in in_force {
            let name = definition.name.clone();
            let Some(on) = definition.on.clone() else {
                if warned.insert(format!("no workflow {name}")) {
                    self.shared
                        .announce(Level::Warning, format!("trigger {name:?} has no on= workflow; it is not registered and never polled"));
                }
                continue;
            };
            match &definition.form {
                TriggerForm::Cron { expression, timezone } => {
                    if registered_cron.contains(&name) {
                        continue;
                    }
                    match self.register_cron(&name, &on, expression, timezone) {
                        Ok(()) => {
                            registered_cron.insert(name);
                        }
                        Err(e) => {
                            if warned.insert(format!("cron {name}")) {
                                self.shared.announce(
                                    Level::Warning,
                                    format!("cron trigger {name:?} of workflow {on:?} was not registered as a cron schedule: {e}"),
                                );
                            }
                        }
                    }
                }
                TriggerForm::Poll { interval_ms } => {
                    let unchanged = lock(&self.state).in_force.get(&name).is_some_and(|d| Arc::ptr_eq(d, &definition));
                    if unchanged {
                        continue;
                    }
                    let registration = Registration {
                        trigger_name: &name,
                        workflow_name: &on,
                        poll_interval_ms: *interval_ms,
                        allow_concurrent: definition.allow_concurrent,
                    };
                    if let Err(e) = self.shared.store.register_trigger(&registration, now_ms()) {
                        self.shared.report("registering a trigger", &e);
                        complete = false;
                        continue;
                    }
                    let mut state = lock(&self.state);
                    let is_new = state.in_force.insert(name.clone(), definition).is_none();
                    if is_new && !state.stopping {
                        let service = self.clone();
                        match std::thread::Builder::new().name("cloaca-trigger".into()).spawn(move || service.poll_loop(&name)) {
                            Ok(handle) => state.pollers.push(handle),
                            Err(e) => {
                                drop(state);
                                self.shared.announce(Level::Error, format!("cannot start the poller thread of a trigger: {e}"));
                            }
                        }
                    }
                }
            }
        }
        complete
    }

    /// The idempotent cron schedule of a cron-form trigger: its id is
    /// derived from the trigger's name, and an existing schedule is kept.
    fn register_cron(&self, name: &str, on: &str, expression: &str, timezone: &str) -> Result<()> {
        let now = now_ms();
        let record = ScheduleRecord {
            id: cron_schedule_id(name),
            workflow_name: on.to_string(),
            cron_expression: expression.to_string(),
            timezone: timezone.to_string(),
            enabled: true,
            next_run_at: CronSchedule::parse(expression, timezone)?.next_after(now)?,
            last_run_at: None,
            skipped_ticks: 0,
            created_at: now,
            updated_at: now,
            instance_name: None,
            params: None,
        };
        self.shared.store.insert_schedule(&record)?;
        self.shared.wake_scheduler();
        Ok(())
    }

    fn definition(&self, name: &str) -> Option<Arc<TriggerDef>> {
        lock(&self.state).in_force.get(name).cloned()
    }

    /// Polls one trigger while this runner holds its lease, until stopped.
    fn poll_loop(self: Arc<Self>, name: &str) {
        let shared = &self.shared;
        let store: &Store = &shared.store;
        let owner = shared.owner.as_str();
        let lease = shared.config.lease;
        let renew_every = lease / 3;
        let mut owned = false;
        let mut next_lease_check = Instant::now();
        let mut in_flight: Option<InFlight> = None;
        loop {
            if self.stopping() {
                break;
            }
            let Some(definition) = self.definition(name) else { break };
            let eligible = definition.on.as_deref().is_some_and(|on| shared.registry.get(on).is_some());
            if Instant::now() >= next_lease_check {
                if eligible {
                    let expires_at = now_ms() + lease.as_millis() as i64;
                    match store.take_trigger_lease(name, owner, expires_at, now_ms()) {
                        Ok(taken) => {
                            if taken && !owned {
                                shared.announce(Level::Debug, format!("trigger {name:?}: this runner ({owner}) polls it now"));
                            }
                            owned = taken;
                        }
                        Err(e) => {
                            shared.report("taking a trigger's lease", &e);
                            owned = false;
                        }
                    }
                } else if owned {
                    let _ = store.release_trigger_lease(name, owner);
                    owned = false;
                }
                next_lease_check = Instant::now() + if owned { renew_every } else { renew_every.min(LOOK_AGAIN) };
            }
            if let Some(poll) = &in_flight {
                let result = lock(&poll.result).take();
                let abandoned = result.is_none() && poll.started.elapsed() >= self.poll_limit;
                if result.is_some() || abandoned {
                    let result = result.unwrap_or_else(|| {
                        Err(format!("the poll did not return within {:.1} s and was abandoned", self.poll_limit.as_secs_f64()))
                    });
                    if owned {
                        owned = self.record(&definition, poll.started_ms, result);
                        if !owned {
                            next_lease_check = Instant::now();
                        }
                    }
                    in_flight = None;
                }
            }
            let mut wake_at = next_lease_check.min(Instant::now() + LOOK_AGAIN);
            if let Some(poll) = &in_flight {
                wake_at = wake_at.min(poll.started + self.poll_limit);
            } else if owned {
                // The row is read before each poll: it may have been
                // disabled, or polled by another owner meanwhile.
                match store.get_trigger(name) {
                    Ok(Some(row)) if row.enabled => {
                        let interval = row.poll_interval_ms.max(MIN_INTERVAL_MS);
                        let due = row.last_poll_at.map_or(i64::MIN, |last| last + interval);
                        let now = now_ms();
                        if due <= now {
                            in_flight = Some(self.start_poll(&definition, now));
                            continue;
                        }
                        wake_at = wake_at.min(Instant::now() + Duration::from_millis((due - now) as u64));
                    }
                    Ok(_) => {}
                    Err(e) => shared.report("reading a trigger", &e),
                }
            }
            self.sleep(wake_at.saturating_duration_since(Instant::now()));
        }
        if owned {
            if let Err(e) = store.release_trigger_lease(name, owner) {
                shared.report("releasing a trigger's lease", &e);
            }
        }
    }

    /// Runs the trigger's poll function on a thread of its own.
    fn start_poll(self: &Arc<Self>, definition: &Arc<TriggerDef>, now: i64) -> InFlight {
        let result = Arc::new(Mutex::new(None));
        let (slot, poll, service) = (result.clone(), definition.poll.clone(), self.clone());
        let spawned = std::thread::Builder::new().name("cloaca-trigger-poll".into()).spawn(move || {
            let outcome = if service.stopping() { Err("the runner is shutting down".to_string()) } else { poll.poll() };
            *lock(&slot) = Some(outcome);
            // Under the state lock: a poller between its check and its
            // wait would miss the signal otherwise.
            let _state = lock(&service.state);
            service.changed.notify_all();
        });
        if let Err(e) = spawned {
            *lock(&result) = Some(Err(format!("cannot start a thread for the poll: {e}")));
        }
        InFlight { result, started_ms: now, started: Instant::now() }
    }

    /// Records a poll's outcome; false when the lease turned out to be lost.
    fn record(&self, definition: &TriggerDef, started_ms: i64, result: std::result::Result<PollOutcome, String>) -> bool {
        let shared = &self.shared;
        let name = definition.name.as_str();
        let owner = shared.owner.as_str();
        let context = match result {
            Ok(PollOutcome::Fire(context)) => context,
            other => {
                if let Err(message) = other {
                    shared.announce(Level::Error, format!("trigger {name:?}: poll failed: {message}"));
                }
                return match shared.store.record_trigger_poll(name, owner, started_ms, now_ms()) {
                    Ok(held) => held,
                    Err(e) => {
                        shared.report("recording a trigger's poll", &e);
                        false
                    }
                };
            }
        };
        let Some(workflow) = definition.on.as_deref().and_then(|on| shared.registry.get(on)) else {
            return shared.store.record_trigger_poll(name, owner, started_ms, now_ms()).unwrap_or(false);
        };
        let now = now_ms();
        let hash = context_hash(context.as_ref());
        let input = fire_input(context.as_ref(), name, now);
        let (execution_id, run_id) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
        let fire = Fire {
            execution_id: &execution_id,
            run_id: &run_id,
            trigger_name: name,
            owner,
            poll_started_at: started_ms,
            context_hash: &hash,
            input: &input,
            dag: &workflow.dag,
        };
        match shared.store.fire_trigger(&fire, now) {
            Ok(FireOutcome::Started { execution_id, roots }) => {
                shared.wake_workers(roots);
                let message = format!("trigger {name:?} fired: execution {execution_id} of workflow {:?} started", workflow.dag.name());
                shared.note(Level::Info, Topic::Execution, message, &execution_id, workflow.dag.name(), None);
                true
            }
            Ok(FireOutcome::Dropped { open_execution }) => {
                shared.announce(
                    Level::Debug,
                    format!("trigger {name:?} fired again with an equal context while execution {open_execution} runs; dropped (allow_concurrent=False)"),
                );
                true
            }
            Ok(FireOutcome::LeaseLost) => {
                shared.announce(
                    Level::Warning,
                    format!("trigger {name:?}: this runner lost the lease during a poll; its fire started nothing"),
                );
                false
            }
            Err(e) => {
                shared.report("firing a trigger", &e);
                false
            }
        }
    }
}
