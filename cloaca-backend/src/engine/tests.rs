//! Engine scenarios against a real database of the built backend: a
//! temporary SQLite file, or the PostgreSQL server the test harness provides
//! in CLOACA_TEST_DATABASE_URL. Task bodies are Rust closures, so these run
//! without Python.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::dag::{Dag, TaskSpec, WorkflowSpec};
use super::registry::{Registry, TaskBody, Workflow};
use super::retry::{Backoff, RetryPolicy, TaskFailure};
use super::runner::{Runner, RunnerConfig};
use super::store::{AttemptOutcome, ExecutionStatus, Store, WorkflowRef};
use super::time::now_ms;
use super::Context;

type Behaviour = dyn Fn(usize, Context) -> Result<Context, TaskFailure> + Send + Sync;

/// A task body that counts its runs and does what `behaviour(run_number, input)` says.
struct Scripted {
    runs: AtomicUsize,
    behaviour: Box<Behaviour>,
}

impl TaskBody for Scripted {
    fn run(&self, input: Context, _timeout: Duration) -> Result<Context, TaskFailure> {
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        (self.behaviour)(run, input)
    }
}

fn failure(message: &str) -> TaskFailure {
    TaskFailure { error_type: "ValueError".into(), message: message.into(), traceback: None, transient: false }
}

/// Sets `key` to true in the context.
fn marks(key: &'static str) -> Box<Behaviour> {
    Box::new(move |_, mut ctx| {
        ctx.insert(key.into(), json!(true));
        Ok(ctx)
    })
}

struct Fixture {
    registry: &'static Registry,
    store: Arc<dyn Store>,
    bodies: HashMap<String, Arc<Scripted>>,
    workflow: Arc<Workflow>,
}

impl Fixture {
    fn runs(&self, task: &str) -> usize {
        self.bodies[task].runs.load(Ordering::SeqCst)
    }

    fn runner(&self, config: RunnerConfig) -> Runner {
        Runner::start(self.store.clone(), self.registry, config).expect("runner starts")
    }
}

fn task(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec { id: id.into(), dependencies: deps.iter().map(|d| d.to_string()).collect(), retry: RetryPolicy::default(), timeout: None }
}

fn open_store() -> Arc<dyn Store> {
    #[cfg(feature = "sqlite")]
    {
        let path = std::env::temp_dir().join(format!("cloaca-engine-test-{}.db", uuid::Uuid::new_v4()));
        let url = match super::url::DatabaseUrl::parse(&format!("sqlite://{}", path.display())).unwrap() {
            super::url::DatabaseUrl::Sqlite(u) => u,
            other => panic!("{other:?}"),
        };
        Arc::new(super::store::sqlite::SqliteStore::open(&url, now_ms()).expect("sqlite store opens"))
    }
    #[cfg(feature = "postgres")]
    {
        let url = std::env::var("CLOACA_TEST_DATABASE_URL").expect(
            "CLOACA_TEST_DATABASE_URL is not set: run the postgres unit tests with `angreal cloaca test --backend postgres`, \
             which starts a throw-away PostgreSQL server",
        );
        Arc::new(super::store::postgres::PostgresStore::open(&url, 4, now_ms()).expect("postgres store opens"))
    }
}

/// A registered workflow named uniquely for this test, with scripted bodies.
fn fixture(tasks: Vec<(TaskSpec, Box<Behaviour>)>) -> Fixture {
    let registry: &'static Registry = Box::leak(Box::default());
    let name = format!("wf-{}", uuid::Uuid::new_v4());
    let mut bodies = HashMap::new();
    let mut specs = Vec::new();
    for (spec, behaviour) in tasks {
        bodies.insert(spec.id.clone(), Arc::new(Scripted { runs: AtomicUsize::new(0), behaviour }));
        specs.push(spec);
    }
    let dag = Dag::new(WorkflowSpec { name, tasks: specs, ..Default::default() }).unwrap();
    let ordered: Vec<Arc<dyn TaskBody>> = dag.tasks().iter().map(|t| bodies[&t.id].clone() as Arc<dyn TaskBody>).collect();
    let workflow = Arc::new(Workflow::new(dag, ordered));
    registry.register(workflow.clone());
    Fixture { registry, store: open_store(), bodies, workflow }
}

fn quick() -> RunnerConfig {
    RunnerConfig { lease: Duration::from_secs(5), ..RunnerConfig::default() }
}

fn input(value: serde_json::Value) -> Context {
    value.as_object().unwrap().clone()
}

#[test]
fn a_diamond_completes_with_merged_context_and_one_run_per_task() {
    let f = fixture(vec![
        (task("a", &[]), marks("a")),
        (task("b", &["a"]), marks("b")),
        (task("c", &["a"]), marks("c")),
        (task("d", &["b", "c"]), marks("d")),
    ]);
    let runner = f.runner(quick());
    let record = runner.execute(f.workflow.dag.name(), &input(json!({"seed": 7}))).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(record.final_context.unwrap(), input(json!({"seed": 7, "a": true, "b": true, "c": true, "d": true})));
    for t in ["a", "b", "c", "d"] {
        assert_eq!(f.runs(t), 1, "{t}");
    }
    assert_eq!(f.store.completed_outputs(&record.id).unwrap().len(), 4);
}

#[test]
fn a_failed_task_skips_its_dependents_while_an_independent_branch_finishes() {
    let f = fixture(vec![
        (task("a", &[]), marks("a")),
        (task("boom", &["a"]), Box::new(|_, _| Err(failure("bad row")))),
        (task("after", &["boom"]), marks("after")),
        (task("side", &[]), marks("side")),
    ]);
    let runner = f.runner(quick());
    let record = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert_eq!(f.runs("after"), 0);
    assert_eq!(f.runs("side"), 1);
    let message = record.error_message.unwrap();
    assert!(message.starts_with("Task 'boom' failed after 1 attempt(s): ValueError: bad row"), "{message}");
    let outputs = f.store.completed_outputs(&record.id).unwrap();
    assert_eq!(outputs.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), ["a", "side"].into());
}

#[test]
fn retries_follow_the_policy_until_success() {
    let mut flaky = task("flaky", &[]);
    flaky.retry = RetryPolicy { retries: 3, backoff: Backoff::Fixed, delay_ms: 5, jitter: false, ..RetryPolicy::default() };
    let f = fixture(vec![(
        flaky,
        Box::new(|run, mut ctx| {
            if run < 3 {
                return Err(failure("not yet"));
            }
            ctx.insert("run".into(), json!(run));
            Ok(ctx)
        }),
    )]);
    let runner = f.runner(quick());
    let record = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(record.final_context.unwrap()["run"], json!(3));
    assert_eq!(f.runs("flaky"), 3);
}

#[test]
fn exhausted_retries_fail_with_the_attempt_count() {
    let mut flaky = task("flaky", &[]);
    flaky.retry = RetryPolicy { retries: 2, backoff: Backoff::Fixed, delay_ms: 1, jitter: false, ..RetryPolicy::default() };
    let f = fixture(vec![(flaky, Box::new(|_, _| Err(failure("always"))))]);
    let runner = f.runner(quick());
    let record = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap();
    runner.shutdown();
    assert_eq!(f.runs("flaky"), 3);
    assert!(record.error_message.unwrap().starts_with("Task 'flaky' failed after 3 attempt(s)"));
}

#[test]
fn a_stuck_attempt_times_out_is_abandoned_and_the_retry_completes() {
    let mut slow = task("slow", &[]);
    slow.timeout = Some(Duration::from_millis(100));
    slow.retry = RetryPolicy { retries: 1, backoff: Backoff::Fixed, delay_ms: 1, jitter: false, ..RetryPolicy::default() };
    let f = fixture(vec![(
        slow,
        Box::new(|run, ctx| {
            if run == 1 {
                std::thread::sleep(Duration::from_secs(5));
            }
            Ok(ctx)
        }),
    )]);
    let runner = f.runner(RunnerConfig { max_concurrent_tasks: 1, ..quick() });
    let record = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap();
    // Shutdown must not wait for the abandoned thread still sleeping in run 1.
    let started = std::time::Instant::now();
    runner.shutdown();
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown waited for an abandoned attempt");
    assert_eq!(record.status, ExecutionStatus::Completed, "{:?}", record.error_message);
    assert_eq!(f.runs("slow"), 2);
}

#[test]
fn an_attempt_that_lost_its_claim_cannot_record() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    // A lease that has already expired: the owner "died".
    let first = f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().expect("ready task claimed");
    let second = f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().expect("expired lease reclaimed");
    assert_eq!((first.attempt, second.attempt), (1, 2));
    let late = f.store.record_attempt(&first, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(!late.accepted, "the first attempt's claim was taken over; its result must be refused");
    let current = f.store.record_attempt(&second, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(current.accepted);
    assert_eq!(current.finished, Some(ExecutionStatus::Completed));
    assert!(f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().is_none(), "a completed task is never claimed again");
}

#[test]
fn a_new_runner_recovers_an_interrupted_execution_without_rerunning_completed_tasks() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    // A runner that completed `first`, claimed `second` and died mid-attempt.
    let first = f.store.claim("dead", &refs, now_ms(), 60_000, true).unwrap().unwrap();
    let done = input(json!({"first": "from the dead runner"}));
    f.store.record_attempt(&first, &f.workflow.dag, &AttemptOutcome::Completed(done), now_ms()).unwrap();
    let second = f.store.claim("dead", &refs, now_ms(), 200, true).unwrap().unwrap();
    assert_eq!(second.task_id, "second");

    let runner = f.runner(quick());
    let record = runner.wait(&id, Some(Duration::from_secs(30))).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(f.runs("first"), 0, "completed before the crash: never runs again");
    assert_eq!(f.runs("second"), 1);
    assert_eq!(record.final_context.unwrap(), input(json!({"first": "from the dead runner", "second": true})));
}

#[test]
fn a_task_that_keeps_killing_its_runners_is_failed_not_run_forever() {
    let f = fixture(vec![(task("poison", &[]), marks("poison")), (task("after", &["poison"]), marks("after"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    for _ in 0..super::runner::MAX_INTERRUPTIONS {
        f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().expect("the expired task is claimable again");
    }
    let runner = f.runner(quick());
    let record = runner.wait(&id, Some(Duration::from_secs(30))).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert_eq!((f.runs("poison"), f.runs("after")), (0, 0));
    let message = record.error_message.unwrap();
    assert!(message.contains("RunnerLost") && message.contains("interrupted 3 times"), "{message}");
}

#[test]
fn the_next_due_time_is_the_retry_time_or_the_lease_expiry() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    let claim = f.store.claim("me", &refs, now_ms(), 60_000, true).unwrap().unwrap();
    let lease_end = f.store.next_due(&refs, true).unwrap().expect("a running task's lease expiry is due with recovery");
    assert!(lease_end >= now_ms() + 50_000, "{lease_end}");
    assert_eq!(f.store.next_due(&refs, false).unwrap(), None, "without recovery only ready tasks are due");
    let retry_at = now_ms() + 5_000;
    let outcome = AttemptOutcome::Failed { failure: failure("again"), retry_at: Some(retry_at) };
    assert!(f.store.record_attempt(&claim, &f.workflow.dag, &outcome, now_ms()).unwrap().accepted);
    assert_eq!(f.store.next_due(&refs, false).unwrap(), Some(retry_at));
    assert!(f.store.claim("me", &refs, now_ms(), 60_000, true).unwrap().is_none(), "not before its retry time");
}

#[test]
fn only_the_leases_of_attempts_really_running_are_renewed() {
    let f = fixture(vec![(task("kept", &[]), marks("kept")), (task("dropped", &[]), marks("dropped"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    let first = f.store.claim("me", &refs, now_ms(), 300, true).unwrap().unwrap();
    let second = f.store.claim("me", &refs, now_ms(), 300, true).unwrap().unwrap();
    // "me" still runs `first`; it dropped `second` (an error before running it).
    f.store.renew_leases("me", &[first.row_id], now_ms() + 60_000).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let taken = f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().expect("the dropped claim lapsed");
    assert_eq!((taken.task_id.as_str(), taken.attempt), (second.task_id.as_str(), 2));
    assert!(f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().is_none(), "the renewed lease holds");
}

#[test]
fn recovery_is_off_when_disabled() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().unwrap();
    let runner = f.runner(RunnerConfig { enable_recovery: false, ..quick() });
    let waited = runner.wait(&id, Some(Duration::from_millis(300)));
    runner.shutdown();
    assert!(matches!(waited, Err(super::error::EngineError::WaitTimedOut { .. })), "{waited:?}");
    assert_eq!(f.runs("only"), 0);
}

#[test]
fn executions_of_another_version_wait_for_a_runner_that_has_it() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), now_ms()).unwrap();
    let other = [WorkflowRef { name: f.workflow.dag.name().into(), version: "0".repeat(64) }];
    assert!(f.store.claim("other", &other, now_ms(), 1000, true).unwrap().is_none());
}

#[test]
fn the_pipeline_timeout_fails_the_execution_and_skips_what_is_left() {
    let f = fixture(vec![
        (task("slow", &[]), Box::new(|_, ctx| {
            std::thread::sleep(Duration::from_millis(400));
            Ok(ctx)
        })),
        (task("after", &["slow"]), marks("after")),
    ]);
    let runner = f.runner(RunnerConfig { pipeline_timeout: Some(Duration::from_millis(100)), ..quick() });
    let record = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap();
    assert_eq!(record.status, ExecutionStatus::Failed);
    assert!(record.error_message.unwrap().contains("pipeline_timeout_seconds"));
    runner.shutdown();
    assert_eq!(f.runs("after"), 0);
    // The slow attempt finished after the abort; its result was refused.
    assert!(f.store.completed_outputs(&record.id).unwrap().is_empty());
}

#[test]
fn waiting_is_woken_not_polled() {
    // With a one-minute poll interval, only a wake-up can make execute return.
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &["a"]), marks("b"))]);
    let runner = f.runner(RunnerConfig { poll_interval: Duration::from_secs(60), ..quick() });
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(runner.execute(f.workflow.dag.name(), &Context::new()).unwrap().status, ExecutionStatus::Completed);
    }
    runner.shutdown();
    assert!(started.elapsed() < Duration::from_secs(30), "execute waited for the poll interval");
}

#[test]
fn listing_is_newest_first_and_filters() {
    let f = fixture(vec![(task("a", &[]), marks("a"))]);
    let runner = f.runner(quick());
    let ids: Vec<String> = (0..3).map(|_| runner.execute(f.workflow.dag.name(), &Context::new()).unwrap().id).collect();
    let listed = runner.store().list_executions(Some(f.workflow.dag.name()), Some(ExecutionStatus::Completed), 10).unwrap();
    runner.shutdown();
    let listed: Vec<String> = listed.into_iter().map(|r| r.id).collect();
    assert_eq!(listed, ids.into_iter().rev().collect::<Vec<_>>());
}

#[test]
fn recorded_state_is_shared_through_the_store() {
    let f = fixture(vec![(task("a", &[]), marks("a"))]);
    let runner = f.runner(quick());
    let id = runner.execute(f.workflow.dag.name(), &Context::new()).unwrap().id;
    runner.shutdown();
    let seen = f.store.get_execution(&id).unwrap().unwrap();
    assert_eq!(seen.status, ExecutionStatus::Completed);
    assert!(seen.finished_at.unwrap() >= seen.created_at);
}
