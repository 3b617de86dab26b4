//! The lease and the fire transaction against a real database of the built
//! backend (a temporary SQLite file, or the harness's PostgreSQL server).

use serde_json::json;

use super::definition::{context_hash, fire_input};
use crate::engine::model::{Context, ExecutionStatus};
use crate::engine::settings::RunnerConfig;
use crate::engine::store::{Fire, FireOutcome, PruneFilter, Registration, Store};
use crate::engine::time::now_ms;
use crate::engine::url::{test_database_url, DatabaseUrl};
use crate::engine::workflow::{Dag, RetryPolicy, TaskSpec, WorkflowSpec};

fn store() -> Store {
    let url = DatabaseUrl::parse(&test_database_url()).unwrap();
    Store::open(&url, None, 2, RunnerConfig::default().database_outage_timeout, now_ms()).unwrap()
}

fn dag() -> Dag {
    let task = TaskSpec { id: "only".into(), dependencies: vec![], retry: RetryPolicy::default(), timeout: None, rule: None };
    Dag::new(WorkflowSpec { name: format!("wf-{}", uuid::Uuid::new_v4()), tasks: vec![task], ..Default::default() }).unwrap()
}

/// A trigger of its own (tests share the PostgreSQL database), registered.
fn registered(store: &Store, dag: &Dag, allow_concurrent: bool) -> String {
    let name = format!("trigger-{}", uuid::Uuid::new_v4());
    let registration = Registration { trigger_name: &name, workflow_name: dag.name(), poll_interval_ms: 100, allow_concurrent };
    store.register_trigger(&registration, now_ms()).unwrap();
    name
}

fn fire(store: &Store, dag: &Dag, name: &str, owner: &str, context: Option<Context>) -> FireOutcome {
    let now = now_ms();
    let hash = context_hash(context.as_ref());
    let input = fire_input(context.as_ref(), name, now);
    let (execution_id, run_id) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let fire = Fire {
        execution_id: &execution_id,
        run_id: &run_id,
        trigger_name: name,
        owner,
        poll_started_at: now,
        context_hash: &hash,
        input: &input,
        dag,
    };
    store.fire_trigger(&fire, now).unwrap()
}

fn started(outcome: FireOutcome) -> String {
    match outcome {
        FireOutcome::Started { execution_id, roots } => {
            assert_eq!(roots, 1);
            execution_id
        }
        other => panic!("expected a started execution, got {other:?}"),
    }
}

#[test]
fn one_runner_holds_the_lease_until_it_expires_or_is_released() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, false);
    let now = now_ms();
    assert!(store.take_trigger_lease(&name, "a", now + 60_000, now).unwrap());
    assert!(!store.take_trigger_lease(&name, "b", now + 60_000, now).unwrap(), "a live lease is not taken");
    assert!(store.take_trigger_lease(&name, "a", now + 120_000, now).unwrap(), "the holder renews it");
    assert!(!store.take_trigger_lease(&name, "b", now + 60_000, now + 100_000).unwrap());
    assert!(store.take_trigger_lease(&name, "b", now + 200_000, now + 130_000).unwrap(), "an expired lease is taken over");
    assert!(!store.record_trigger_poll(&name, "a", now, now + 130_000).unwrap(), "the old holder's poll is fenced off");
    assert!(store.record_trigger_poll(&name, "b", now + 1, now + 130_000).unwrap());
    assert_eq!(store.get_trigger(&name).unwrap().unwrap().last_poll_at, Some(now + 1));
    store.release_trigger_lease(&name, "a").unwrap();
    assert_eq!(store.get_trigger(&name).unwrap().unwrap().lease_owner.as_deref(), Some("b"), "only the holder releases");
    store.release_trigger_lease(&name, "b").unwrap();
    assert!(store.take_trigger_lease(&name, "a", now + 60_000, now).unwrap(), "a released lease is free at once");
}

#[test]
fn a_fire_starts_one_execution_with_its_history_row_and_poll_time() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, false);
    store.take_trigger_lease(&name, "a", now_ms() + 60_000, now_ms()).unwrap();
    let context: Context = json!({"file": "a.csv", "trigger_name": "overridden"}).as_object().unwrap().clone();
    let id = started(fire(&store, &dag, &name, "a", Some(context.clone())));
    let record = store.get_execution(&id).unwrap().unwrap();
    assert_eq!(record.input["file"], "a.csv");
    assert_eq!(record.input["trigger_name"], json!(name));
    assert!(record.input["triggered_at"].as_str().unwrap().ends_with("+00:00"));
    let history = store.trigger_history(&name, 100, 0).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].execution_id.as_deref(), Some(id.as_str()));
    assert_eq!(history[0].context_hash.as_deref(), Some(context_hash(Some(&context)).as_str()));
    assert_eq!((history[0].completed_at, history[0].status), (None, Some(ExecutionStatus::Pending)));
    assert!(store.get_trigger(&name).unwrap().unwrap().last_poll_at.is_some());

    // An equal context while that execution is unfinished: dropped.
    assert_eq!(fire(&store, &dag, &name, "a", Some(context.clone())), FireOutcome::Dropped { open_execution: id.clone() });
    // Another context is not equal.
    let other: Context = json!({"file": "b.csv"}).as_object().unwrap().clone();
    started(fire(&store, &dag, &name, "a", Some(other)));
    // Once the first has finished, the equal context fires again.
    assert!(store.abort_execution(&id, &dag, "stopped by the test", now_ms()).unwrap());
    started(fire(&store, &dag, &name, "a", Some(context)));
    let history = store.trigger_history(&name, 100, 0).unwrap();
    assert_eq!(history.len(), 3, "a dropped fire has no history row");
    let first = history.iter().find(|h| h.execution_id.as_deref() == Some(id.as_str())).unwrap();
    assert_eq!(first.completed_at, store.get_execution(&id).unwrap().unwrap().finished_at, "completed_at is when it finished");
    assert!(first.completed_at.is_some());
    assert!(history.windows(2).all(|w| w[0].started_at >= w[1].started_at), "newest first");
}

#[test]
fn with_allow_concurrent_every_fire_starts_an_execution() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, true);
    store.take_trigger_lease(&name, "a", now_ms() + 60_000, now_ms()).unwrap();
    for _ in 0..3 {
        started(fire(&store, &dag, &name, "a", None));
    }
    let history = store.trigger_history(&name, 100, 0).unwrap();
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|h| h.context_hash.as_deref() == Some("fire_no_context")));
}

#[test]
fn a_fire_without_the_lease_starts_nothing() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, true);
    store.take_trigger_lease(&name, "b", now_ms() + 60_000, now_ms()).unwrap();
    assert_eq!(fire(&store, &dag, &name, "a", None), FireOutcome::LeaseLost);
    assert!(store.trigger_history(&name, 100, 0).unwrap().is_empty());
    assert!(store.list_executions(Some(dag.name()), None, 10).unwrap().is_empty());
    assert_eq!(store.get_trigger(&name).unwrap().unwrap().last_poll_at, None);
}

#[test]
fn a_fire_run_again_after_a_lost_acknowledgement_starts_one_execution() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, false);
    store.take_trigger_lease(&name, "a", now_ms() + 60_000, now_ms()).unwrap();
    let now = now_ms();
    let input = fire_input(None, &name, now);
    let (execution_id, run_id) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let fire = Fire {
        execution_id: &execution_id,
        run_id: &run_id,
        trigger_name: &name,
        owner: "a",
        poll_started_at: now,
        context_hash: "fire_no_context",
        input: &input,
        dag: &dag,
    };
    started(store.fire_trigger(&fire, now).unwrap());
    started(store.fire_trigger(&fire, now).unwrap());
    assert_eq!(store.list_executions(Some(dag.name()), None, 10).unwrap().len(), 1);
    assert_eq!(store.trigger_history(&name, 100, 0).unwrap().len(), 1);
}

#[test]
fn registering_again_keeps_the_flag_the_polls_and_the_history() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, false);
    store.take_trigger_lease(&name, "a", now_ms() + 60_000, now_ms()).unwrap();
    started(fire(&store, &dag, &name, "a", None));
    store.set_trigger_enabled(&name, false, now_ms()).unwrap();
    let before = store.get_trigger(&name).unwrap().unwrap();
    let registration = Registration { trigger_name: &name, workflow_name: "another", poll_interval_ms: 5000, allow_concurrent: true };
    store.register_trigger(&registration, now_ms() + 10).unwrap();
    let after = store.get_trigger(&name).unwrap().unwrap();
    assert_eq!((after.workflow_name.as_str(), after.poll_interval_ms, after.allow_concurrent), ("another", 5000, true));
    assert_eq!((after.id, after.enabled, after.last_poll_at, after.created_at), (before.id, false, before.last_poll_at, before.created_at));
    assert_eq!(store.trigger_history(&name, 100, 0).unwrap().len(), 1);
    store.set_trigger_enabled("no such trigger", true, now_ms()).unwrap();
    assert!(store.get_trigger("no such trigger").unwrap().is_none());
    assert!(store.trigger_history("no such trigger", 100, 0).unwrap().is_empty());
}

#[test]
fn pruning_an_execution_removes_its_trigger_history_row() {
    let (store, dag) = (store(), dag());
    let name = registered(&store, &dag, true);
    store.take_trigger_lease(&name, "a", now_ms() + 60_000, now_ms()).unwrap();
    let id = started(fire(&store, &dag, &name, "a", None));
    let kept = started(fire(&store, &dag, &name, "a", None));
    store.abort_execution(&id, &dag, "stopped by the test", now_ms()).unwrap();
    let filter = PruneFilter { finished_before: now_ms() + 1000, status: None, workflow_name: Some(dag.name()) };
    assert_eq!(store.prune_batch(&filter, 100).unwrap().deleted, 1);
    let history = store.trigger_history(&name, 100, 0).unwrap();
    assert_eq!(history.iter().map(|h| h.execution_id.clone().unwrap()).collect::<Vec<_>>(), [kept]);
}

// ---- the polling threads of two runners on one database ---------------------------

mod polling {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::super::definition::{Definitions, PollOutcome, TriggerDef, TriggerForm, TriggerPoll};
    use super::super::service::TriggerService;
    use crate::engine::model::Context;
    use crate::engine::runner::shared::Shared;
    use crate::engine::runner::Reporter;
    use crate::engine::settings::RunnerConfig;
    use crate::engine::store::Store;
    use crate::engine::time::now_ms;
    use crate::engine::url::{test_database_url, DatabaseUrl};
    use crate::engine::workflow::{AttemptInfo, Registry, TaskBody, TaskFailure, Workflow};

    /// A poll that fires, takes `takes`, and notices when another poll of it runs at the same time.
    struct Watched {
        takes: Duration,
        running: AtomicUsize,
        overlapped: AtomicBool,
        polls: AtomicUsize,
    }

    impl TriggerPoll for Watched {
        fn poll(&self) -> Result<PollOutcome, String> {
            if self.running.fetch_add(1, Ordering::SeqCst) > 0 {
                self.overlapped.store(true, Ordering::SeqCst);
            }
            std::thread::sleep(self.takes);
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.polls.fetch_add(1, Ordering::SeqCst);
            Ok(PollOutcome::Fire(None))
        }
    }

    struct Nothing;
    impl TaskBody for Nothing {
        fn run(&self, _: &AttemptInfo<'_>, input: Context, _: Duration) -> Result<Context, TaskFailure> {
            Ok(input)
        }
    }

    struct Setup {
        url: String,
        registry: &'static Registry,
        definitions: &'static Definitions,
        workflow: String,
        name: String,
        poll: Arc<Watched>,
    }

    fn setup(takes: Duration) -> Setup {
        let dag = super::dag();
        let workflow = dag.name().to_string();
        let registry: &'static Registry = Box::leak(Box::default());
        registry.register(Arc::new(Workflow::new(dag, vec![Arc::new(Nothing)])));
        let definitions: &'static Definitions = Box::leak(Box::default());
        let poll =
            Arc::new(Watched { takes, running: AtomicUsize::new(0), overlapped: AtomicBool::new(false), polls: AtomicUsize::new(0) });
        let name = format!("trigger-{}", uuid::Uuid::new_v4());
        definitions.define(TriggerDef {
            name: name.clone(),
            on: Some(workflow.clone()),
            form: TriggerForm::Poll { interval_ms: 100 },
            allow_concurrent: true,
            poll: poll.clone(),
        });
        Setup { url: test_database_url(), registry, definitions, workflow, name, poll }
    }

    /// The trigger threads of one runner (no workers: fired executions stay pending).
    fn start(s: &Setup, poll_limit: Duration) -> (Arc<Shared>, Arc<TriggerService>, std::thread::JoinHandle<()>) {
        let store = Store::open(&DatabaseUrl::parse(&s.url).unwrap(), None, 2, Duration::from_secs(5), now_ms()).unwrap();
        let config = RunnerConfig { lease: Duration::from_secs(30), ..RunnerConfig::default() };
        let report: Reporter = Arc::new(|note| eprintln!("{:?}: {}", note.level, note.message));
        let shared = Shared::new(Arc::new(store), s.registry, config, report);
        let service = TriggerService::with_poll_limit(shared.clone(), s.definitions, poll_limit);
        let handle = service.start().unwrap();
        (shared, service, handle)
    }

    fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn one_of_two_runners_polls_and_the_other_takes_over_when_it_stops() {
        let s = setup(Duration::from_millis(20));
        let (a, a_service, a_thread) = start(&s, Duration::from_secs(30));
        let (b, b_service, b_thread) = start(&s, Duration::from_secs(30));
        wait_for("five polls", Duration::from_secs(20), || s.poll.polls.load(Ordering::SeqCst) >= 5);
        let owner = a.store.get_trigger(&s.name).unwrap().unwrap().lease_owner.unwrap();
        let (owner_service, owner_thread, other) = if owner == a.owner {
            (a_service, a_thread, (b_service, b_thread, &b))
        } else {
            (b_service, b_thread, (a_service, a_thread, &a))
        };
        owner_service.stop();
        owner_thread.join().unwrap();
        let stopped_at = Instant::now();
        let seen = s.poll.polls.load(Ordering::SeqCst);
        wait_for("the other runner to poll", Duration::from_secs(10), || s.poll.polls.load(Ordering::SeqCst) >= seen + 5);
        assert!(stopped_at.elapsed() < Duration::from_secs(10), "taken over at once, not after the 30 s lease");
        assert_eq!(other.2.store.get_trigger(&s.name).unwrap().unwrap().lease_owner.as_deref(), Some(other.2.owner.as_str()));
        // A poll is counted as it returns, and its fire recorded after: the
        // last counted poll's fire may not be recorded yet, and a stop
        // discards it.
        let recorded = || other.2.store.trigger_history(&s.name, 10_000, 0).unwrap().len();
        wait_for("ten recorded fires", Duration::from_secs(10), || recorded() >= 10);
        other.0.stop();
        other.1.join().unwrap();
        assert!(!s.poll.overlapped.load(Ordering::SeqCst), "two polls of one trigger ran at once");
        let history = other.2.store.trigger_history(&s.name, 10_000, 0).unwrap();
        let executions = other.2.store.list_executions(Some(&s.workflow), None, 10_000).unwrap();
        assert_eq!(history.len(), executions.len(), "one execution per recorded fire");
        assert!(history.len() <= s.poll.polls.load(Ordering::SeqCst));
        assert!(history.len() >= 10);
        assert_eq!(other.2.store.get_trigger(&s.name).unwrap().unwrap().lease_owner, None, "released at stop");
    }

    #[test]
    fn a_poll_past_the_limit_is_abandoned_its_fire_discarded_and_the_next_starts() {
        let s = setup(Duration::from_millis(1500));
        let (shared, service, thread) = start(&s, Duration::from_millis(300));
        wait_for("a second poll beside the first", Duration::from_secs(10), || s.poll.overlapped.load(Ordering::SeqCst));
        wait_for("the poll to be recorded", Duration::from_secs(10), || {
            shared.store.get_trigger(&s.name).unwrap().unwrap().last_poll_at.is_some()
        });
        service.stop();
        thread.join().unwrap();
        assert!(shared.store.trigger_history(&s.name, 100, 0).unwrap().is_empty(), "an abandoned poll's fire starts nothing");
        assert!(shared.store.list_executions(Some(&s.workflow), None, 100).unwrap().is_empty());
    }
}
