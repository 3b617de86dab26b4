//! Engine scenarios against a real database of the built backend: a
//! temporary SQLite file, or the PostgreSQL server the test harness provides
//! in CLOACA_TEST_DATABASE_URL. Task bodies are Rust closures, so these run
//! without Python.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::model::{Context, ExecutionStatus, WorkflowRef};
use super::runner::Runner;
use super::settings::RunnerConfig;
use super::store::{AttemptOutcome, NextClaim, PruneFilter, Store};
use super::sync::lock;
use super::time::now_ms;
use super::url::{test_database_url, DatabaseUrl};
use super::workflow::{AttemptInfo, Backoff, Dag, Jitter, Registry, RetryPolicy, TaskBody, TaskFailure, TaskSpec, Workflow, WorkflowSpec};

type Behaviour = dyn Fn(usize, Context) -> Result<Context, TaskFailure> + Send + Sync;

/// A task body that counts its runs and does what `behaviour(run_number, input)` says.
struct Scripted {
    runs: AtomicUsize,
    behaviour: Box<Behaviour>,
}

impl TaskBody for Scripted {
    fn run(&self, _attempt: &AttemptInfo<'_>, input: Context, _timeout: Duration) -> Result<Context, TaskFailure> {
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
    url: String,
    store: Arc<Store>,
    bodies: HashMap<String, Arc<Scripted>>,
    workflow: Arc<Workflow>,
}

impl Fixture {
    fn runs(&self, task: &str) -> usize {
        self.bodies[task].runs.load(Ordering::SeqCst)
    }

    /// A runner with a store of its own on the fixture's database (a runner
    /// closes its store when it shuts down; the fixture's stays open).
    fn runner(&self, config: RunnerConfig) -> Runner {
        let report: super::runner::Reporter = Arc::new(|note| eprintln!("{:?}: {}", note.level, note.message));
        Runner::start(open_store_at(&self.url), self.registry, config, report).expect("runner starts")
    }
}

fn task(id: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        id: id.into(),
        dependencies: deps.iter().map(|d| d.to_string()).collect(),
        retry: RetryPolicy::default(),
        timeout: None,
        rule: None,
    }
}

/// A store on `url`, as a separate runner process would open it.
fn open_store_at(url: &str) -> Arc<Store> {
    Arc::new(
        Store::open(&DatabaseUrl::parse(url).unwrap(), None, 4, RunnerConfig::default().database_outage_timeout, now_ms())
            .expect("store opens"),
    )
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
    let url = test_database_url();
    Fixture { registry, store: open_store_at(&url), url, bodies, workflow }
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
    flaky.retry = RetryPolicy { retries: 3, backoff: Backoff::Fixed, delay_ms: 5, jitter: Jitter::Off, ..RetryPolicy::default() };
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
    flaky.retry = RetryPolicy { retries: 2, backoff: Backoff::Fixed, delay_ms: 1, jitter: Jitter::Off, ..RetryPolicy::default() };
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
    slow.retry = RetryPolicy { retries: 1, backoff: Backoff::Fixed, delay_ms: 1, jitter: Jitter::Off, ..RetryPolicy::default() };
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
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    // A lease that has already expired: the owner "died".
    let first = f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().expect("ready task claimed");
    let second = f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().expect("expired lease reclaimed");
    assert_eq!((first.attempt, second.attempt), (1, 2));
    let late = f.store.record_attempt(&first, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(!late.accepted, "the first attempt's claim was taken over; its result must be refused");
    let current = f.store.record_attempt(&second, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(current.accepted);
    assert_eq!(current.finished.as_ref().map(|r| r.status), Some(ExecutionStatus::Completed));
    assert!(f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().is_none(), "a completed task is never claimed again");
}

#[test]
fn recording_a_completion_claims_the_next_task_with_its_input() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &input(json!({"given": 1})), None, now_ms()).unwrap();
    let claimed = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().expect("the root is ready");
    assert_eq!(claimed.claim.task_id, "first");
    assert_eq!(claimed.input, Some(input(json!({"given": 1}))), "a root's input comes with its claim");
    let next = NextClaim { owner: "me", workflows: &refs, registry: f.registry, lease_ms: 60_000 };
    let output = input(json!({"given": 1, "first": true}));
    let recorded = f
        .store
        .record_attempt_then(&claimed.claim, &f.workflow.dag, &AttemptOutcome::Completed(output.clone()), now_ms(), Some(&next))
        .unwrap();
    assert!(recorded.accepted);
    assert_eq!(recorded.readied, 1);
    let handed = recorded.next.expect("the readied dependent is claimed in the same transaction");
    assert_eq!((handed.claim.task_id.as_str(), handed.claim.attempt, handed.claim.owner.as_str()), ("second", 1, "me"));
    assert_eq!(handed.input, Some(output), "its input is the output just recorded");
    assert!(f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().is_none(), "it is claimed, not only ready");
    let done = input(json!({"second": true}));
    let last =
        f.store.record_attempt_then(&handed.claim, &f.workflow.dag, &AttemptOutcome::Completed(done), now_ms(), Some(&next)).unwrap();
    assert_eq!(last.finished.as_ref().map(|r| r.status), Some(ExecutionStatus::Completed));
    assert!(last.next.is_none(), "nothing is left to claim");
    #[cfg(feature = "sqlite")]
    assert!(last.looked, "it looked for any ready task");
}

#[test]
fn creating_an_execution_claims_roots_for_idle_workers_and_the_rest_stay_ready() {
    use super::model::TaskStatus;
    use super::store::RootClaims;
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &[]), marks("b")), (task("c", &["a", "b"]), marks("c"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    let claims = RootClaims { owner: "me", lease_ms: 60_000, count: 1 };
    let given = input(json!({"given": 1}));
    let created = f.store.create_execution_claiming(&id, &f.workflow.dag, &given, None, Some(&claims), now_ms()).unwrap();
    assert_eq!(created.claimed.len(), 1, "one idle worker: one root claimed");
    let handed = &created.claimed[0];
    assert_eq!((handed.claim.task_id.as_str(), handed.claim.attempt, handed.claim.owner.as_str()), ("a", 1, "me"));
    assert_eq!(handed.input, Some(given.clone()), "a root's input is the execution input");
    let record = f.store.get_execution(&id).unwrap().unwrap();
    assert_eq!(record.status, ExecutionStatus::Running, "a claimed root starts its execution");
    assert!(record.started_at.is_some());
    let tasks = f.store.task_records(&id).unwrap();
    let a = tasks.iter().find(|t| t.task_id == "a").unwrap();
    assert_eq!((a.status, a.attempts, a.runner.as_deref()), (TaskStatus::Running, 1, Some("me")));
    // The other root is left to any worker; the claimed one is not claimed twice.
    let other = f.store.claim_with_input("other", &refs, f.registry, now_ms(), 60_000, true).unwrap().expect("b is ready");
    assert_eq!(other.claim.task_id, "b");
    assert!(f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().is_none());
    // Run again (its commit's answer lost), the creation returns the same claim.
    let again = f.store.create_execution_claiming(&id, &f.workflow.dag, &given, None, Some(&claims), now_ms()).unwrap();
    assert_eq!(again.claimed.iter().map(|c| c.claim.row_id).collect::<Vec<_>>(), vec![handed.claim.row_id]);
    // The handed claim records like any other.
    let output = input(json!({"given": 1, "a": true}));
    let recorded = f.store.record_attempt(&handed.claim, &f.workflow.dag, &AttemptOutcome::Completed(output), now_ms()).unwrap();
    assert!(recorded.accepted);
}

#[test]
fn task_rows_are_stored_in_the_workflows_order_and_claimed_in_it() {
    use super::store::RootClaims;
    let names = ["f", "b", "e", "a", "d", "c"];
    let f = fixture(names.iter().map(|n| (task(n, &[]), marks(n))).chain([(task("join", &names), marks("join"))]).collect());
    let order: Vec<&str> = f.workflow.dag.tasks().iter().map(|t| t.id.as_str()).collect();
    let refs = [f.workflow.reference()];
    let claims = RootClaims { owner: "me", lease_ms: 60_000, count: 2 };
    // The first execution of a version stores its shape too; the second
    // is created without (on PostgreSQL, by one statement).
    for _ in 0..2 {
        let id = uuid::Uuid::new_v4().to_string();
        let created = f.store.create_execution_claiming(&id, &f.workflow.dag, &Context::new(), None, Some(&claims), now_ms()).unwrap();
        let handed: Vec<(&str, i64)> = created.claimed.iter().map(|c| (c.claim.task_id.as_str(), c.claim.row_id)).collect();
        assert_eq!(handed.iter().map(|h| h.0).collect::<Vec<_>>(), order[..2], "the first roots are claimed");
        assert!(handed[0].1 < handed[1].1, "{handed:?}");
        assert_eq!(f.store.get_execution(&id).unwrap().unwrap().status, ExecutionStatus::Running);
        let mut claimed = Vec::new();
        while let Some(claim) = f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap() {
            assert!(claim.row_id > handed[1].1, "rows follow the workflow's order");
            claimed.push(claim.task_id);
        }
        assert_eq!(claimed, order[2..6], "the other roots, in order; the join waits");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn a_creation_announces_the_roots_it_leaves_ready_and_a_used_key_returns_the_first() {
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &[]), marks("b")), (task("c", &["a", "b"]), marks("c"))]);
    f.store.create_execution(&uuid::Uuid::new_v4().to_string(), &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let (mut listener, _) = another_session(&f);
    listen(&mut listener, super::store::Channel::Work);
    let key = uuid::Uuid::new_v4().to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let created = f.store.create_execution(&id, &f.workflow.dag, &Context::new(), Some(&key), now_ms()).unwrap();
    assert_eq!((created.execution_id.as_str(), created.existing), (id.as_str(), false));
    assert!(receives(&mut listener, "2"), "both roots are ready for any runner");
    let again =
        f.store.create_execution(&uuid::Uuid::new_v4().to_string(), &f.workflow.dag, &Context::new(), Some(&key), now_ms()).unwrap();
    assert_eq!((again.execution_id.as_str(), again.existing), (id.as_str(), true), "the key's execution, not a new one");
    let records = f.store.list_executions(Some(f.workflow.dag.name()), None, 10).unwrap();
    assert_eq!(records.len(), 2, "nothing was stored for the used key");
}

#[test]
fn looking_for_work_claims_ready_then_expired_tasks_or_says_when_the_next_comes_due() {
    use super::store::Work;
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &[]), marks("b"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    let start = now_ms();
    f.store.create_execution(&id, &f.workflow.dag, &input(json!({"given": 1})), None, start).unwrap();
    let me = NextClaim { owner: "me", workflows: &refs, registry: f.registry, lease_ms: 1_000 };
    let look = |recover: bool, now: i64| f.store.claim_or_next_due(&me, now, recover).unwrap();
    // Both roots are ready: the first is claimed, with its input.
    let Work::Claimed(a) = look(false, start) else { panic!("a is ready") };
    assert_eq!((a.claim.task_id.as_str(), a.input.clone()), ("a", Some(input(json!({"given": 1})))));
    let Work::Claimed(b) = look(false, start) else { panic!("b is ready") };
    assert_eq!(b.claim.task_id, "b");
    // Nothing is ready: without recovery nothing comes due; with it, the
    // earlier lease's expiry does.
    assert_eq!(look(false, start), Work::Idle { next_due: None });
    assert_eq!(look(true, start), Work::Idle { next_due: Some(start + 1_000) });
    // Once the leases lapse, recovery takes one over.
    let Work::Claimed(again) = look(true, start + 2_000) else { panic!("a lapsed lease is claimable") };
    assert_eq!((again.claim.task_id.as_str(), again.claim.attempt), ("a", 2));
    let nothing = NextClaim { workflows: &[], ..me };
    assert_eq!(f.store.claim_or_next_due(&nothing, start, true).unwrap(), Work::Idle { next_due: None });
}

#[test]
fn claims_no_worker_started_are_released_at_shutdown_and_run_elsewhere() {
    use super::model::TaskStatus;
    use super::store::RootClaims;
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    // Shutdown begins, and every worker is gone, before the claims below
    // are made: a worker already claiming when it began could take one.
    let (runner, late) = (f.runner(quick()), f.runner(quick()));
    let (shared, late_shared) = (runner.shared_for_tests(), late.shared_for_tests());
    shared.stop();
    late_shared.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (runner.live_workers() > 0 || late.live_workers() > 0) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((runner.live_workers(), late.live_workers()), (0, 0), "the workers ended at the stop");
    let (kept, paused) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    // Made as a creation makes them when a worker is idle: one left for
    // the workers when shutdown began, one handed over after.
    let claims = RootClaims { owner: &shared.owner, lease_ms: 60_000, count: 1 };
    let left = f.store.create_execution_claiming(&kept, &f.workflow.dag, &Context::new(), None, Some(&claims), now_ms()).unwrap();
    let claims = RootClaims { owner: &late_shared.owner, lease_ms: 60_000, count: 1 };
    let held = f.store.create_execution_claiming(&paused, &f.workflow.dag, &Context::new(), None, Some(&claims), now_ms()).unwrap();
    f.store.pause_execution(&paused, "me", now_ms()).unwrap();
    lock(&shared.inflight).handed.extend(left.claimed);
    runner.shutdown();
    late_shared.hand_over(held.claimed);
    assert!(lock(&late_shared.inflight).handed.is_empty(), "released at once, not kept");
    late.shutdown();
    let statuses = |id: &str| f.store.task_records(id).unwrap().iter().map(|t| (t.status, t.attempts)).collect::<Vec<_>>();
    assert_eq!(statuses(&kept), vec![(TaskStatus::Ready, 0)], "released, as if never claimed");
    assert_eq!(statuses(&paused), vec![(TaskStatus::Paused, 0)], "a paused execution's released claim is held");
    let other = f.runner(quick());
    let record = other.wait(&kept, Some(Duration::from_secs(10))).unwrap();
    other.shutdown();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(f.runs("only"), 1, "it ran once, on the runner started later");
}

#[test]
fn a_root_started_on_an_idle_runner_is_claimed_by_the_creation_itself() {
    use super::model::TaskStatus;
    let gate = Arc::new(std::sync::Barrier::new(2));
    let body_gate = gate.clone();
    let f = fixture(vec![(
        task("only", &[]),
        Box::new(move |_, ctx| {
            body_gate.wait();
            Ok(ctx)
        }),
    )]);
    let runner = f.runner(RunnerConfig { max_concurrent_tasks: 1, ..quick() });
    let shared = runner.shared_for_tests();
    while shared.idle_workers.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let id = runner.start_execution(f.workflow.dag.name(), &Context::new(), None).unwrap();
    // No worker could have claimed it yet: its body waits at the gate, and
    // the row was written running, by this runner, in the same transaction.
    let only = f.store.task_records(&id).unwrap().remove(0);
    assert_eq!((only.status, only.attempts, only.runner.as_deref()), (TaskStatus::Running, 1, Some(runner.id())));
    gate.wait();
    let record = runner.wait(&id, Some(Duration::from_secs(10))).unwrap();
    runner.shutdown();
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(f.runs("only"), 1);
}

#[test]
fn a_waiter_gets_the_record_the_finishing_transaction_wrote() {
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &["a"]), marks("b"))]);
    let runner = f.runner(quick());
    let record = runner.execute(f.workflow.dag.name(), &input(json!({"seed": 1}))).unwrap();
    runner.shutdown();
    assert_eq!(Some(&record), f.store.get_execution(&record.id).unwrap().as_ref(), "the record is the stored one");
    assert_eq!(record.final_context.unwrap(), input(json!({"seed": 1, "a": true, "b": true})));
}

#[test]
fn recording_claims_another_executions_task_only_where_rows_are_not_locked() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let refs = [f.workflow.reference()];
    let (one, two) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    f.store.create_execution(&one, &f.workflow.dag, &input(json!({"n": 1})), None, now_ms()).unwrap();
    f.store.create_execution(&two, &f.workflow.dag, &input(json!({"n": 2})), None, now_ms() + 1).unwrap();
    let first = f.store.claim_with_input("me", &refs, f.registry, now_ms() + 2, 60_000, true).unwrap().unwrap();
    let next = NextClaim { owner: "me", workflows: &refs, registry: f.registry, lease_ms: 60_000 };
    let recorded = f
        .store
        .record_attempt_then(&first.claim, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms() + 3, Some(&next))
        .unwrap();
    assert_eq!(recorded.finished.as_ref().map(|r| r.status), Some(ExecutionStatus::Completed));
    // PostgreSQL claims only a dependent the completion readies: another
    // claim inside the completion's transaction would hold the execution's
    // row for longer. The worker claims after the commit.
    #[cfg(feature = "postgres")]
    assert!(recorded.next.is_none() && !recorded.looked);
    #[cfg(feature = "sqlite")]
    {
        assert!(recorded.looked);
        let handed = recorded.next.expect("the other execution's root is claimed");
        assert_ne!(handed.claim.execution_id, first.claim.execution_id);
        let other_input = input(json!({"n": if first.claim.execution_id == one { 2 } else { 1 }}));
        assert_eq!(handed.input, Some(other_input));
    }
}

#[test]
fn a_paused_execution_holds_the_dependent_instead_of_handing_it_over() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let first = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    f.store.pause_execution(&id, "me", now_ms()).unwrap();
    let next = NextClaim { owner: "me", workflows: &refs, registry: f.registry, lease_ms: 60_000 };
    let recorded = f
        .store
        .record_attempt_then(&first.claim, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms(), Some(&next))
        .unwrap();
    assert!(recorded.accepted);
    assert!(recorded.next.is_none(), "a paused execution's dependent is held, not handed over");
    assert_eq!(recorded.readied, 0);
    assert!(f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().is_none(), "held until resumed");
    assert_eq!(f.store.resume_execution(&id, "me", now_ms()).unwrap(), 1);
    let second = f.store.claim("other", &refs, now_ms(), 60_000, true).unwrap().expect("ready once resumed");
    assert_eq!((second.task_id.as_str(), second.attempt), ("second", 1));
}

#[test]
fn a_lost_claim_records_nothing_and_claims_nothing() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let dead = f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().unwrap();
    let alive = f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().unwrap();
    let next = NextClaim { owner: "dead", workflows: &refs, registry: f.registry, lease_ms: 60_000 };
    let late =
        f.store.record_attempt_then(&dead, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms(), Some(&next)).unwrap();
    assert!(!late.accepted && late.next.is_none());
    let current = f.store.record_attempt(&alive, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert_eq!(current.readied, 1);
}

#[test]
fn a_new_runner_recovers_an_interrupted_execution_without_rerunning_completed_tasks() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
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
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
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
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
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
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
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
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    f.store.claim("dead", &refs, now_ms(), -1000, true).unwrap().unwrap();
    let runner = f.runner(RunnerConfig { enable_recovery: false, ..quick() });
    let waited = runner.wait(&id, Some(Duration::from_millis(300)));
    runner.shutdown();
    assert!(matches!(waited, Err(super::error::Error::WaitTimedOut { .. })), "{waited:?}");
    assert_eq!(f.runs("only"), 0);
}

#[test]
fn executions_of_another_version_wait_for_a_runner_that_has_it() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let other = [WorkflowRef { name: f.workflow.dag.name().into(), version: "0".repeat(64) }];
    assert!(f.store.claim("other", &other, now_ms(), 1000, true).unwrap().is_none());
}

#[test]
fn the_pipeline_timeout_fails_the_execution_and_skips_what_is_left() {
    let f = fixture(vec![
        (
            task("slow", &[]),
            Box::new(|_, ctx| {
                std::thread::sleep(Duration::from_millis(400));
                Ok(ctx)
            }),
        ),
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
    let listed = runner.list_executions(Some(f.workflow.dag.name()), Some(ExecutionStatus::Completed), 10).unwrap();
    runner.shutdown();
    let listed: Vec<String> = listed.into_iter().map(|r| r.id).collect();
    assert_eq!(listed, ids.into_iter().rev().collect::<Vec<_>>());
}

#[test]
fn pruning_deletes_finished_executions_in_batches_and_never_an_unfinished_one() {
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &["a"]), marks("b"))]);
    let name = f.workflow.dag.name();
    let runner = f.runner(quick());
    let finished: Vec<String> = (0..5).map(|_| runner.execute(name, &Context::new()).unwrap().id).collect();
    runner.shutdown();
    // Of a workflow no runner has: it stays pending, however old.
    let unknown =
        Dag::new(WorkflowSpec { name: format!("{name}-unregistered"), tasks: vec![task("x", &[])], ..Default::default() }).unwrap();
    let unfinished = uuid::Uuid::new_v4().to_string();
    f.store.create_execution(&unfinished, &unknown, &Context::new(), None, now_ms() - 86_400_000).unwrap();
    let runner = f.runner(quick());
    let everything = |workflow_name| PruneFilter { finished_before: now_ms() + 60_000, status: None, workflow_name };
    assert_eq!(runner.prune_executions(&everything(Some("another workflow")), 2).unwrap(), 0);
    let earlier = PruneFilter { finished_before: 0, ..everything(Some(name)) };
    assert_eq!(runner.prune_executions(&earlier, 2).unwrap(), 0, "nothing finished before 1970");
    let failed_only = PruneFilter { status: Some(ExecutionStatus::Failed), ..everything(Some(name)) };
    assert_eq!(runner.prune_executions(&failed_only, 2).unwrap(), 0);
    runner.shutdown();
    // Three batches of two, the last one short.
    let runner = f.runner(quick());
    assert_eq!(runner.prune_executions(&everything(Some(name)), 2).unwrap(), 5);
    assert_eq!(runner.prune_executions(&everything(Some(unknown.name())), 1000).unwrap(), 0, "the unfinished one stays");
    runner.shutdown();
    for id in &finished {
        assert!(f.store.get_execution(id).unwrap().is_none(), "{id} was pruned");
        assert!(f.store.completed_outputs(id).unwrap().is_empty(), "{id}'s task rows went with it");
    }
    assert!(f.store.get_execution(&unfinished).unwrap().is_some(), "an unfinished execution is never pruned");
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

// ---- cron: the scheduling rules with an injected clock ---------------------------

mod cron_ticks {
    use super::*;
    use crate::engine::cron::{fire_due, recover_lost};
    use crate::engine::settings::CronConfig;
    use crate::engine::store::{CronRunStatus, ScheduleRecord};

    const HOUR: i64 = 3_600_000;

    /// Whole hours since the epoch, far from the real clock and from other
    /// tests (they share the PostgreSQL database).
    fn fake_hour(offset_days: i64) -> i64 {
        (4_102_444_800_000 / HOUR + offset_days * 24) * HOUR // 2100-01-01 + days
    }

    fn hourly_schedule(f: &Fixture, first_tick: i64) -> ScheduleRecord {
        let record = hourly_schedule_record(f, first_tick);
        f.store.insert_schedule(&record).unwrap();
        record
    }

    fn hourly_schedule_record(f: &Fixture, first_tick: i64) -> ScheduleRecord {
        ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            workflow_name: f.workflow.dag.name().to_string(),
            cron_expression: "0 * * * *".into(),
            timezone: "UTC".into(),
            enabled: true,
            next_run_at: first_tick,
            last_run_at: None,
            skipped_ticks: 0,
            created_at: first_tick - HOUR,
            updated_at: first_tick - HOUR,
            instance_name: None,
            params: None,
        }
    }

    fn fire(store: &Store, registry: &Registry, max_catchup: usize, now: i64) -> u64 {
        fire_due(store, &registry.snapshot(), max_catchup, now, &mut |what, e| panic!("{what}: {e}")).unwrap()
    }

    fn cron_config() -> CronConfig {
        RunnerConfig::default().cron
    }

    fn tick_times(f: &Fixture, schedule_id: &str) -> Vec<i64> {
        let mut times: Vec<i64> = f.store.cron_history(schedule_id, 1000, 0).unwrap().iter().map(|r| r.scheduled_time).collect();
        times.sort();
        times
    }

    #[test]
    fn a_due_tick_starts_one_execution_and_the_schedule_moves_on() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(1);
        let schedule = hourly_schedule(&f, t0);
        assert_eq!(fire(&f.store, f.registry, 100, t0 - 1), 0, "not due a millisecond early");
        assert_eq!(fire(&f.store, f.registry, 100, t0 + HOUR / 2), 1, "one root readied");
        assert_eq!(fire(&f.store, f.registry, 100, t0 + HOUR / 2), 0, "the same tick never fires twice");
        let history = f.store.cron_history(&schedule.id, 10, 0).unwrap();
        assert_eq!(history.len(), 1);
        let run = &history[0];
        assert_eq!((run.scheduled_time, run.attempt, run.claimed_at), (t0, 1, t0 + HOUR / 2));
        assert_eq!(run.status, CronRunStatus::Execution(ExecutionStatus::Pending));
        let execution = f.store.get_execution(&run.execution_id).unwrap().unwrap();
        assert_eq!(execution.input["cron_schedule_id"], json!(schedule.id));
        assert_eq!(execution.input["cron_scheduled_time"], json!(crate::engine::time::rfc3339(t0)));
        let stored = f.store.get_schedule(&schedule.id).unwrap().unwrap();
        assert_eq!((stored.next_run_at, stored.last_run_at, stored.skipped_ticks), (t0 + HOUR, Some(t0), 0));
    }

    #[test]
    fn runners_firing_at_once_start_each_tick_exactly_once() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(2);
        let schedule = hourly_schedule(&f, t0);
        let now = t0 + 10 * HOUR + 5;
        // Two stores stand for two runner processes, four threads each.
        let stores = [f.store.clone(), open_store_at(&f.url)];
        let registry = f.registry;
        let fired: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let store = stores[i % 2].clone();
                    scope.spawn(move || fire(&store, registry, 100, now))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let expected: Vec<i64> = (0..=10).map(|h| t0 + h * HOUR).collect();
        assert_eq!(tick_times(&f, &schedule.id), expected, "ticks 00:00 to 10:00, each once");
        assert_eq!(fired, 11);
    }

    #[test]
    fn a_tick_already_started_is_never_started_again_even_if_it_comes_due_again() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(8);
        let schedule = hourly_schedule(&f, t0);
        assert_eq!(fire(&f.store, f.registry, 100, t0), 1);
        // A change based on a read from before the tick fired is refused...
        assert!(!f.store.update_schedule(&schedule, t0, t0).unwrap());
        // ...and even a schedule moved back to an old tick does not start it twice.
        assert!(f.store.update_schedule(&schedule, t0 + HOUR, t0).unwrap());
        assert_eq!(fire(&f.store, f.registry, 100, t0 + 1), 0);
        assert_eq!(tick_times(&f, &schedule.id), vec![t0]);
        assert_eq!(f.store.get_schedule(&schedule.id).unwrap().unwrap().next_run_at, t0 + HOUR, "moved on past it");
    }

    #[test]
    fn missed_ticks_beyond_the_catch_up_limit_are_skipped_and_counted() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(3);
        let schedule = hourly_schedule(&f, t0);
        // Down from 00:00 to 09:30: ten ticks were missed.
        assert_eq!(fire(&f.store, f.registry, 3, t0 + 9 * HOUR + HOUR / 2), 3);
        assert_eq!(tick_times(&f, &schedule.id), vec![t0 + 7 * HOUR, t0 + 8 * HOUR, t0 + 9 * HOUR], "the most recent three");
        let stored = f.store.get_schedule(&schedule.id).unwrap().unwrap();
        assert_eq!((stored.skipped_ticks, stored.next_run_at, stored.last_run_at), (7, t0 + 10 * HOUR, Some(t0 + 9 * HOUR)));
    }

    #[test]
    fn a_disabled_schedule_or_an_unregistered_workflow_fires_nothing() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(4);
        let mut schedule = hourly_schedule(&f, t0);
        schedule.enabled = false;
        assert!(f.store.update_schedule(&schedule, t0, t0).unwrap());
        assert_eq!(fire(&f.store, f.registry, 100, t0 + HOUR), 0);
        schedule.enabled = true;
        assert!(f.store.update_schedule(&schedule, t0, t0).unwrap());
        let empty: &'static Registry = Box::leak(Box::default());
        assert_eq!(fire(&f.store, empty, 100, t0 + HOUR), 0, "a process without the workflow leaves the tick to others");
        assert_eq!(fire(&f.store, f.registry, 100, t0 + HOUR), 2);
    }

    #[test]
    fn a_schedule_that_cannot_be_planned_is_reported_and_left_alone() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(5);
        let mut schedule = hourly_schedule(&f, t0);
        schedule.cron_expression = "not a cron expression".into();
        assert!(f.store.update_schedule(&schedule, t0, t0).unwrap());
        let mut reports = Vec::new();
        let workflows = f.registry.snapshot();
        let roots = fire_due(&f.store, &workflows, 100, t0 + HOUR, &mut |what, e| reports.push(format!("{what}: {e}"))).unwrap();
        assert_eq!(roots, 0);
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(reports[0].contains("not a cron expression"), "{reports:?}");
        assert_eq!(f.store.get_schedule(&schedule.id).unwrap().unwrap().next_run_at, t0, "untouched");
    }

    #[test]
    fn a_stalled_tick_execution_is_lost_then_restarted_while_attempts_allow() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(6);
        let schedule = hourly_schedule(&f, t0);
        let config = CronConfig { lost_threshold: Duration::from_secs(600), max_recovery_attempts: 1, ..cron_config() };
        let workflows = f.registry.snapshot();
        assert_eq!(fire(&f.store, f.registry, 100, t0), 1);
        // Nobody claims its ready task (no runner is up in this test).
        assert_eq!(recover_lost(&f.store, &workflows, &config, t0 + 600_000).unwrap(), 0, "not before the threshold");
        assert_eq!(recover_lost(&f.store, &workflows, &config, t0 + 600_001).unwrap(), 1, "restarted: one root readied");
        let history = f.store.cron_history(&schedule.id, 10, 0).unwrap();
        assert_eq!(
            history.iter().map(|r| (r.attempt, r.status)).collect::<Vec<_>>(),
            vec![(2, CronRunStatus::Execution(ExecutionStatus::Pending)), (1, CronRunStatus::Lost),]
        );
        assert!(history.iter().all(|r| r.scheduled_time == t0));
        let old = f.store.get_execution(&history[1].execution_id).unwrap().unwrap();
        assert_eq!(old.status, ExecutionStatus::Failed);
        let message = old.error_message.unwrap();
        assert!(message.starts_with("execution lost") && message.contains("started again as attempt 2"), "{message}");
        // The restart stalls too: out of attempts, it is only marked lost.
        let later = t0 + 2 * 600_001;
        assert_eq!(recover_lost(&f.store, &workflows, &config, later).unwrap(), 0);
        let history = f.store.cron_history(&schedule.id, 10, 0).unwrap();
        assert_eq!(history.iter().map(|r| r.status).collect::<Vec<_>>(), vec![CronRunStatus::Lost, CronRunStatus::Lost]);
        let newest = f.store.get_execution(&history[0].execution_id).unwrap().unwrap();
        assert!(newest.error_message.unwrap().contains("cron_max_recovery_attempts"));
    }

    #[test]
    fn an_execution_making_progress_is_not_lost() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(7);
        hourly_schedule(&f, t0);
        let config = CronConfig { lost_threshold: Duration::from_secs(600), ..cron_config() };
        let workflows = f.registry.snapshot();
        fire(&f.store, f.registry, 100, t0);
        // A runner claims the task and keeps its lease alive far into the future.
        let claim = f.store.claim("live-runner", &[f.workflow.reference()], t0 + 1, 10 * 600_000, false).unwrap().unwrap();
        assert_eq!(recover_lost(&f.store, &workflows, &config, t0 + 2 * 600_000).unwrap(), 0);
        let history = f
            .store
            .cron_history(
                &f.store.list_schedules(false, 1000, 0).unwrap().iter().find(|s| s.workflow_name == f.workflow.dag.name()).unwrap().id,
                10,
                0,
            )
            .unwrap();
        assert_eq!(history[0].status, CronRunStatus::Execution(ExecutionStatus::Pending));
        assert_eq!(history[0].execution_id, claim.execution_id);
    }

    fn hourly_instance(f: &Fixture, first_tick: i64, instance_name: &str, params: Context) -> ScheduleRecord {
        let record = ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            instance_name: Some(instance_name.into()),
            params: Some(params),
            ..hourly_schedule_record(f, first_tick)
        };
        f.store.insert_schedule(&record).map(|_| record.clone()).unwrap()
    }

    #[test]
    fn an_instance_tick_starts_from_its_params_and_a_lost_one_restarts_from_the_same_input() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(9);
        let schedule = hourly_instance(&f, t0, "eu", input(json!({"region": "eu", "limits": {"rows": 5}})));
        assert_eq!(fire(&f.store, f.registry, 100, t0), 1);
        let first = f.store.cron_history(&schedule.id, 10, 0).unwrap().remove(0);
        let given = f.store.get_execution(&first.execution_id).unwrap().unwrap().input;
        let time = crate::engine::time::rfc3339(t0);
        assert_eq!(
            serde_json::Value::Object(given.clone()),
            json!({
                "region": "eu", "limits": {"rows": 5},
                "cron_schedule_id": schedule.id, "cron_scheduled_time": time,
                "scheduled_time": time, "schedule_id": schedule.id,
                "schedule_timezone": "UTC", "schedule_expression": "0 * * * *",
            })
        );
        // Changing the expression meanwhile changes neither the params nor the lost tick's input.
        let mut moved = f.store.get_schedule(&schedule.id).unwrap().unwrap();
        moved.cron_expression = "30 * * * *".into();
        assert!(f.store.update_schedule(&moved, moved.next_run_at, t0).unwrap());
        assert_eq!(f.store.get_schedule(&schedule.id).unwrap().unwrap().params, schedule.params);
        let config = CronConfig { lost_threshold: Duration::from_secs(600), ..cron_config() };
        assert_eq!(recover_lost(&f.store, &f.registry.snapshot(), &config, t0 + 600_001).unwrap(), 1);
        let again = f.store.cron_history(&schedule.id, 10, 0).unwrap().remove(0);
        assert_eq!((again.attempt, again.scheduled_time), (2, t0));
        assert_eq!(f.store.get_execution(&again.execution_id).unwrap().unwrap().input, given);
    }

    #[test]
    fn an_instance_name_is_unique_per_workflow_across_stores_until_deleted() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        let other = fixture(vec![(task("a", &[]), marks("a"))]);
        let t0 = fake_hour(10);
        let first = hourly_instance(&f, t0, "nightly", Context::new());
        let second_store = open_store_at(&f.url);
        let taken = ScheduleRecord { id: uuid::Uuid::new_v4().to_string(), ..first.clone() };
        let error = second_store.insert_schedule(&taken).unwrap_err();
        assert!(
            matches!(&error, crate::engine::error::Error::DuplicateInstance { schedule_id, .. } if *schedule_id == first.id),
            "{error}"
        );
        assert!(second_store.get_schedule(&taken.id).unwrap().is_none(), "nothing stored");
        // Inserting the same record again (a retry after a dropped connection) is no error.
        f.store.insert_schedule(&first).unwrap();
        // The same name for another workflow, and anonymous schedules, are fine.
        hourly_instance(&other, t0, "nightly", Context::new());
        hourly_schedule(&f, t0);
        hourly_schedule(&f, t0);
        assert!(f.store.delete_schedule(&first.id).unwrap());
        second_store.insert_schedule(&taken).unwrap();
        assert_eq!(f.store.get_schedule(&taken.id).unwrap().unwrap().instance_name.as_deref(), Some("nightly"));
    }

    #[test]
    fn stats_count_completed_failed_unfinished_and_lost_runs_since_a_time() {
        let f = fixture(vec![(task("a", &[]), marks("a"))]);
        // Later than every other test's ticks; counted as a difference, so
        // that earlier runs on the same database do not matter.
        let t0 = fake_hour(400 * 365);
        let counts = |since| {
            let s = f.store.cron_stats(since).unwrap();
            [s.total, s.completed, s.failed, s.unfinished, s.lost]
        };
        let (before, before_later) = (counts(t0), counts(t0 + 2 * HOUR));
        let schedule = hourly_schedule(&f, t0);
        assert_eq!(fire(&f.store, f.registry, 100, t0 + 3 * HOUR), 4);
        // One tick's execution completes, one fails.
        let dag = &f.workflow.dag;
        let finish = |ok: bool| {
            let claim = f.store.claim("r", &[f.workflow.reference()], t0 + 4 * HOUR, HOUR, false).unwrap().unwrap();
            let outcome = if ok {
                AttemptOutcome::Completed(Context::new())
            } else {
                AttemptOutcome::Failed { failure: failure("no"), retry_at: None }
            };
            f.store.record_attempt(&claim, dag, &outcome, t0 + 4 * HOUR).unwrap();
        };
        finish(true);
        finish(false);
        let config = CronConfig { lost_threshold: Duration::from_secs(60), max_recovery_attempts: 0, ..cron_config() };
        // Of the two left, both stall: lost (no restart allowed).
        let stalled = t0 + 4 * HOUR + 61_000;
        assert_eq!(recover_lost(&f.store, &f.registry.snapshot(), &config, stalled).unwrap(), 0);
        let added: Vec<i64> = counts(t0).iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(added, vec![4, 1, 1, 0, 2], "total, completed, failed, unfinished, lost");
        assert_eq!(counts(t0 + 2 * HOUR)[0] - before_later[0], 2, "since filters by scheduled time");
        assert_eq!(f.store.cron_history(&schedule.id, 10, 0).unwrap().len(), 4);
    }
}

#[cfg(feature = "postgres")]
#[test]
fn stores_in_different_schemas_share_a_database_without_seeing_each_other() {
    use super::store::postgres::listen::channel_name;
    use super::store::Channel;
    let f = fixture(vec![(task("a", &[]), marks("a"))]);
    let open = |schema: &str| Store::open(&DatabaseUrl::parse(&f.url).unwrap(), Some(schema), 2, Duration::ZERO, now_ms()).unwrap();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (one, two) = (format!("tenant_one_{suffix}"), format!("tenant_two_{suffix}"));
    let first = open(&one);
    let second = open(&two);
    first.create_execution("e-1", &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    assert!(first.get_execution("e-1").unwrap().is_some());
    assert!(second.get_execution("e-1").unwrap().is_none());
    assert!(f.store.get_execution("e-1").unwrap().is_none(), "nor the default schema");
    assert!(second.claim("r", &[f.workflow.reference()], now_ms(), 1000, true).unwrap().is_none());
    assert!(first.claim("r", &[f.workflow.reference()], now_ms(), 1000, true).unwrap().is_some());
    // Opening again finds the schema and its tables as they are.
    let again = open(&one);
    assert!(again.get_execution("e-1").unwrap().is_some());
    assert_ne!(channel_name(Channel::Work, Some(&one)), channel_name(Channel::Work, Some(&two)));
    assert!(channel_name(Channel::Done, Some(&"a".repeat(63))).len() <= 63);
}

/// Makes `client` listen on the default schema's `channel`.
#[cfg(feature = "postgres")]
fn listen(client: &mut postgres::Client, channel: super::store::Channel) {
    let name = super::store::postgres::listen::channel_name(channel, None);
    client.batch_execute(&format!("LISTEN \"{name}\"")).unwrap();
}

/// Whether `client` receives a notification with `payload` within 5 s.
/// Other tests share the channel, so their notifications are passed over.
#[cfg(feature = "postgres")]
fn receives(client: &mut postgres::Client, payload: &str) -> bool {
    use postgres::fallible_iterator::FallibleIterator;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut notifications = client.notifications();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match notifications.timeout_iter(left).next().unwrap() {
            Some(n) if n.payload() == payload => return true,
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

/// Records `claim`'s completion on another thread, asking for the next
/// claim as a worker does.
#[cfg(feature = "postgres")]
fn record_on_a_thread(f: &Fixture, claim: &super::store::Claim) -> std::thread::JoinHandle<super::store::AttemptRecorded> {
    let (store, workflow, claim, registry) = (f.store.clone(), f.workflow.clone(), claim.clone(), f.registry);
    std::thread::spawn(move || {
        let refs = [workflow.reference()];
        let next = NextClaim { owner: "me", workflows: &refs, registry, lease_ms: 60_000 };
        store.record_attempt_then(&claim, &workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms(), Some(&next)).unwrap()
    })
}

/// Waits until a session waits for a lock the session `holder` (a
/// backend pid) holds.
#[cfg(feature = "postgres")]
fn wait_for_a_lock_wait(watcher: &mut postgres::Client, holder: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watcher.query_opt("SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", &[&holder]).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no session waited for the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A second session of the test database, with its backend pid.
#[cfg(feature = "postgres")]
fn another_session(f: &Fixture) -> (postgres::Client, i32) {
    let mut client = postgres::Client::connect(&f.url, postgres::NoTls).unwrap();
    let pid = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    (client, pid)
}

#[cfg(feature = "postgres")]
#[test]
fn a_pause_that_commits_during_the_merged_completion_takes_back_the_handed_over_claim() {
    // A join: the completion that readies it is recorded in a transaction
    // (another completion could lock the join's row too).
    let f = fixture(vec![
        (task("first", &[]), marks("first")),
        (task("other", &[]), marks("other")),
        (task("join", &["first", "other"]), marks("join")),
    ]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let first = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    let other_root = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    f.store.record_attempt(&other_root.claim, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    // Another session pauses the execution and holds its row until the
    // completion's statement has taken its snapshot (which sees it running).
    let (mut other, holder) = another_session(&f);
    let mut pause = other.transaction().unwrap();
    pause.execute("UPDATE cloaca_executions SET status = 'paused' WHERE id = $1", &[&id]).unwrap();
    let recording = record_on_a_thread(&f, &first.claim);
    let (mut watcher, _) = another_session(&f);
    wait_for_a_lock_wait(&mut watcher, holder);
    pause.commit().unwrap();
    let recorded = recording.join().unwrap();
    assert!(recorded.accepted);
    assert!(recorded.next.is_none(), "the claim of the dependent is taken back");
    let row = other
        .query_one("SELECT status, attempt, lease_owner FROM cloaca_task_executions WHERE execution_id = $1 AND task_id = 'join'", &[&id])
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1), row.get::<_, Option<String>>(2)), ("held".into(), 0, None));
}

#[cfg(feature = "postgres")]
#[test]
fn a_chain_step_holds_the_execution_row_from_its_start_and_a_pause_before_it_holds_the_dependent() {
    let f = fixture(vec![
        (task("first", &[]), marks("first")),
        (task("second", &["first"]), marks("second")),
        (task("third", &["second"]), marks("third")),
    ]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let first = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    // Holding the dependent's row: a completion recorded by itself waits
    // for it with the execution's row already locked (a transaction would
    // lock that row last), so no pause can slip in before it commits.
    let (mut other, holder) = another_session(&f);
    let mut hold = other.transaction().unwrap();
    hold.execute("SELECT 1 FROM cloaca_task_executions WHERE execution_id = $1 AND task_id = 'second' FOR UPDATE", &[&id]).unwrap();
    let recording = record_on_a_thread(&f, &first.claim);
    let (mut watcher, _) = another_session(&f);
    wait_for_a_lock_wait(&mut watcher, holder);
    let probe = watcher.execute("SELECT 1 FROM cloaca_executions WHERE id = $1 FOR UPDATE NOWAIT", &[&id]);
    assert!(probe.is_err(), "the completion holds the execution's row while it waits");
    hold.commit().unwrap();
    let recorded = recording.join().unwrap();
    assert!(recorded.accepted);
    let second = recorded.next.expect("the dependent is handed over");
    assert_eq!((second.claim.task_id.as_str(), second.claim.attempt), ("second", 1));
    // A pause that holds the execution's row first is waited for, and seen:
    // the dependent is held, not handed over.
    let mut pause = other.transaction().unwrap();
    pause.execute("UPDATE cloaca_executions SET status = 'paused' WHERE id = $1", &[&id]).unwrap();
    let recording = record_on_a_thread(&f, &second.claim);
    wait_for_a_lock_wait(&mut watcher, holder);
    pause.commit().unwrap();
    let recorded = recording.join().unwrap();
    assert!(recorded.accepted && recorded.next.is_none());
    let row = other
        .query_one("SELECT status, attempt FROM cloaca_task_executions WHERE execution_id = $1 AND task_id = 'third'", &[&id])
        .unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i64>(1)), ("held".into(), 0));
    assert_eq!(f.store.resume_execution(&id, "me", now_ms()).unwrap(), 1);
    let third = f.store.claim("me", &refs, now_ms(), 60_000, true).unwrap().expect("ready once resumed");
    let done = f.store.record_attempt(&third, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert_eq!(done.finished.map(|r| r.status), Some(ExecutionStatus::Completed), "the last completion settles it");
}

#[cfg(feature = "postgres")]
#[test]
fn the_last_step_of_a_chain_finishes_its_execution_in_its_statement_and_announces_it() {
    let f = fixture(vec![(task("first", &[]), marks("first")), (task("second", &["first"]), marks("second"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &input(json!({"seed": 1})), None, now_ms()).unwrap();
    let first = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    let step = record_on_a_thread(&f, &first.claim).join().unwrap();
    let second = step.next.expect("the dependent is handed over");
    // Holding the execution's row: the last completion waits for it
    // before it writes anything, and finishes the execution once it has it.
    let (mut other, holder) = another_session(&f);
    listen(&mut other, super::store::Channel::Done);
    let mut hold = other.transaction().unwrap();
    hold.execute("SELECT 1 FROM cloaca_executions WHERE id = $1 FOR UPDATE", &[&id]).unwrap();
    let output = input(json!({"seed": 1, "second": [1, 2]}));
    let recording = {
        let (store, workflow, claim, output) = (f.store.clone(), f.workflow.clone(), second.claim.clone(), output.clone());
        std::thread::spawn(move || store.record_attempt(&claim, &workflow.dag, &AttemptOutcome::Completed(output), now_ms()).unwrap())
    };
    let (mut watcher, _) = another_session(&f);
    wait_for_a_lock_wait(&mut watcher, holder);
    let mut probe = watcher.transaction().unwrap();
    let task_row = "SELECT 1 FROM cloaca_task_executions WHERE execution_id = $1 AND task_id = 'second' FOR UPDATE NOWAIT";
    assert!(probe.execute(task_row, &[&id]).is_ok(), "the task's row is not locked before the execution's");
    probe.rollback().unwrap();
    hold.commit().unwrap();
    let recorded = recording.join().unwrap();
    let finished = recorded.finished.expect("the last completion finishes the execution");
    assert_eq!((finished.status, finished.final_context.as_ref()), (ExecutionStatus::Completed, Some(&output)));
    assert_eq!(f.store.get_execution(&id).unwrap().unwrap(), finished, "what the waiters get is what is stored");
    assert!(receives(&mut other, &id), "the end of {id} is announced");
}

#[cfg(feature = "postgres")]
#[test]
fn a_fan_out_completion_recorded_by_itself_notifies_the_tasks_it_leaves_to_others() {
    let f = fixture(vec![
        (task("root", &[]), marks("root")),
        (task("a", &["root"]), marks("a")),
        (task("b", &["root"]), marks("b")),
        (task("c", &["root"]), marks("c")),
    ]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let root = f.store.claim_with_input("me", &refs, f.registry, now_ms(), 60_000, true).unwrap().unwrap();
    let mut listener = postgres::Client::connect(&f.url, postgres::NoTls).unwrap();
    listen(&mut listener, super::store::Channel::Work);
    let recorded = record_on_a_thread(&f, &root.claim).join().unwrap();
    assert_eq!((recorded.accepted, recorded.readied, recorded.next.is_none()), (true, 3, true));
    assert!(receives(&mut listener, "3"), "the three readied tasks are announced");
}

// ---- steering: cancel, pause, resume, retry, idempotent starts ----------------

#[test]
fn a_late_outcome_of_an_earlier_round_is_refused_after_a_retry() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let stale = f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().unwrap();
    f.store.cancel_execution(&id, "r", now_ms()).unwrap();
    f.store.retry_execution(&id, "r", now_ms()).unwrap();
    let fresh = f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().expect("the retried task is ready");
    assert_eq!((fresh.attempt, fresh.attempt - fresh.attempt_base), (2, 1), "numbers go on; the round counts from one");
    let late = f.store.record_attempt(&stale, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(!late.accepted, "the cancelled round's attempt must not complete the new round");
    let done = f.store.record_attempt(&fresh, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert_eq!(done.finished.as_ref().map(|r| r.status), Some(ExecutionStatus::Completed));
    let kinds: Vec<&str> = f.store.events(&id).unwrap().iter().map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"attempt_cancelled") && kinds.contains(&"execution_retried"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "execution_finished").count(), 2, "{kinds:?}");
}

#[test]
fn a_paused_execution_holds_what_becomes_ready_until_resumed() {
    let f = fixture(vec![(task("a", &[]), marks("a")), (task("b", &["a"]), marks("b")), (task("c", &[]), marks("c"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    let a = f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().unwrap();
    f.store.pause_execution(&id, "r", now_ms()).unwrap();
    assert!(f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().is_none(), "the ready root is held");
    let recorded = f.store.record_attempt(&a, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    assert!(recorded.accepted && recorded.readied == 0, "a running task finishes; its dependent is held");
    assert!(f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().is_none());
    let statuses: Vec<&str> = f.store.task_records(&id).unwrap().iter().map(|t| t.status.display_name()).collect();
    assert_eq!(statuses, ["Completed", "Paused", "Paused"]);
    assert_eq!(f.store.get_execution(&id).unwrap().unwrap().status, ExecutionStatus::Paused);
    assert_eq!(f.store.resume_execution(&id, "r", now_ms()).unwrap(), 2);
    assert!(f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().is_some());
    assert!(f.store.claim("r", &refs, now_ms(), 60_000, true).unwrap().is_some());
}

#[test]
fn an_idempotency_key_names_one_execution_of_one_workflow() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let other = fixture(vec![(task("only", &[]), marks("only"))]);
    // Ids of this test's own: other tests' stores share the default schema.
    let (e1, e2, e3) = (uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().to_string());
    let key = uuid::Uuid::new_v4().to_string();
    let first = f.store.create_execution(&e1, &f.workflow.dag, &Context::new(), Some(&key), now_ms()).unwrap();
    let again = f.store.create_execution(&e2, &f.workflow.dag, &Context::new(), Some(&key), now_ms()).unwrap();
    assert_eq!((first.execution_id.as_str(), first.existing), (e1.as_str(), false));
    assert_eq!((again.execution_id.as_str(), again.existing), (e1.as_str(), true));
    assert!(f.store.get_execution(&e2).unwrap().is_none(), "nothing was inserted for the second start");
    let refused = f.store.create_execution(&e3, &other.workflow.dag, &Context::new(), Some(&key), now_ms()).unwrap_err();
    assert!(matches!(refused, super::error::Error::IdempotencyConflict { .. }), "{refused}");
    assert!(f.store.get_execution(&e3).unwrap().is_none());
}

#[test]
fn cancelled_executions_are_pruned_with_their_events() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    f.store.cancel_execution(&id, "r", now_ms()).unwrap();
    let filter = PruneFilter { finished_before: now_ms() + 1000, status: None, workflow_name: Some(f.workflow.dag.name()) };
    let pruned = f.store.prune_batch(&filter, 10).unwrap();
    assert_eq!(pruned.deleted, 1);
    assert!(matches!(f.store.events(&id), Err(super::error::Error::UnknownExecution(_))));
}

#[test]
fn a_lost_lease_is_in_the_events_with_the_runner_that_lost_it() {
    let f = fixture(vec![(task("only", &[]), marks("only"))]);
    let id = uuid::Uuid::new_v4().to_string();
    let refs = [f.workflow.reference()];
    f.store.create_execution(&id, &f.workflow.dag, &Context::new(), None, now_ms()).unwrap();
    f.store.claim("dead", &refs, now_ms(), 50, true).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let second = f.store.claim("alive", &refs, now_ms(), 60_000, true).unwrap().expect("the lapsed lease is taken over");
    f.store.record_attempt(&second, &f.workflow.dag, &AttemptOutcome::Completed(Context::new()), now_ms()).unwrap();
    let events = f.store.events(&id).unwrap();
    let of_task: Vec<(&str, Option<i64>, Option<&str>)> =
        events.iter().filter(|e| e.task_id.is_some()).map(|e| (e.kind.name(), e.attempt, e.runner.as_deref())).collect();
    assert_eq!(
        of_task,
        [
            ("task_ready", None, None),
            ("attempt_claimed", Some(1), Some("dead")),
            ("lease_expired", Some(1), Some("dead")),
            ("attempt_claimed", Some(2), Some("alive")),
            ("attempt_succeeded", Some(2), Some("alive")),
        ]
    );
    let records = f.store.task_records(&id).unwrap();
    assert_eq!((records[0].attempts, records[0].runner.as_deref()), (2, Some("alive")));
}

/// Deferred attempts: a body gives its slot back while it waits and takes
/// one again; the runner keeps `max_concurrent_tasks` workers claiming.
mod deferral {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::engine::model::TaskStatus;
    use crate::engine::workflow::SlotError;

    /// Gives its slot back, waits until `until` is set, takes a slot again;
    /// writes what it saw to `log`.
    struct Deferring {
        until: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl TaskBody for Deferring {
        fn run(&self, attempt: &AttemptInfo<'_>, input: Context, _timeout: Duration) -> Result<Context, TaskFailure> {
            let note = |line: String| self.log.lock().unwrap().push(line);
            let slot = attempt.slot;
            // Noted before the release too: once it is done, a task may
            // run on the slot before this thread gets to note anything.
            note("releasing".into());
            slot.release().map_err(|e| failure(&e.to_string()))?;
            note(format!("released, held={}", slot.is_held()));
            while !self.until.load(Ordering::SeqCst) {
                if let Err(e) = slot.pause(Duration::from_millis(10), None) {
                    note(format!("pause: {e:?}"));
                    return Err(failure(&e.to_string()));
                }
            }
            slot.reacquire().map_err(|e| failure(&e.to_string()))?;
            note(format!("resumed, held={}", slot.is_held()));
            Ok(input)
        }
    }

    /// Sets `flag` and notes it.
    struct Setting {
        flag: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl TaskBody for Setting {
        fn run(&self, _attempt: &AttemptInfo<'_>, input: Context, _timeout: Duration) -> Result<Context, TaskFailure> {
            self.log.lock().unwrap().push("other ran".into());
            self.flag.store(true, Ordering::SeqCst);
            Ok(input)
        }
    }

    struct Setup {
        registry: &'static Registry,
        url: String,
        workflow: Arc<Workflow>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Setup {
        fn runner(&self, config: RunnerConfig) -> Runner {
            let report: super::super::runner::Reporter = Arc::new(|note| eprintln!("{:?}: {}", note.level, note.message));
            Runner::start(open_store_at(&self.url), self.registry, config, report).expect("runner starts")
        }

        fn lines(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    /// `waiter` defers until `flag` is set; `setter` (given) sets it.
    fn setup(waiter: TaskSpec, flag: Arc<AtomicBool>, setter: Option<TaskSpec>) -> Setup {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut specs = vec![waiter.clone()];
        let mut bodies: HashMap<String, Arc<dyn TaskBody>> = HashMap::new();
        bodies.insert(waiter.id.clone(), Arc::new(Deferring { until: flag.clone(), log: log.clone() }));
        if let Some(setter) = setter {
            bodies.insert(setter.id.clone(), Arc::new(Setting { flag, log: log.clone() }));
            specs.push(setter);
        }
        let dag = Dag::new(WorkflowSpec { name: format!("wf-{}", uuid::Uuid::new_v4()), tasks: specs, ..Default::default() }).unwrap();
        let ordered = dag.tasks().iter().map(|t| bodies[&t.id].clone()).collect();
        let workflow = Arc::new(Workflow::new(dag, ordered));
        let registry: &'static Registry = Box::leak(Box::default());
        registry.register(workflow.clone());
        Setup { registry, url: test_database_url(), workflow, log }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_deferred_attempt_lets_another_run_on_its_slot_then_takes_one_back() {
        // Claimed in id order: the waiter first, so the setter can only run
        // on the slot the waiter gives back.
        let flag = Arc::new(AtomicBool::new(false));
        let s = setup(task("a_waiter", &[]), flag, Some(task("b_setter", &[])));
        let runner = s.runner(RunnerConfig { max_concurrent_tasks: 1, ..quick() });
        let record = runner.execute(s.workflow.dag.name(), &Context::new()).unwrap();
        assert_eq!(record.status, ExecutionStatus::Completed, "{:?}", record.error_message);
        let lines = s.lines();
        assert_eq!((lines[0].as_str(), lines[3].as_str()), ("releasing", "resumed, held=true"), "{lines:?}");
        let mut between = lines[1..3].to_vec();
        between.sort();
        assert_eq!(between, ["other ran", "released, held=false"], "{lines:?}");
        // The replacement started at the deferral handed its slot back and ended.
        wait_for("the surplus worker to retire", || runner.live_workers() == 1);
        runner.shutdown();
    }

    #[test]
    fn shutting_down_during_a_deferral_ends_it_and_leaves_the_attempt_to_run_again() {
        let flag = Arc::new(AtomicBool::new(false));
        let s = setup(task("waiter", &[]), flag.clone(), None);
        let config = RunnerConfig { max_concurrent_tasks: 1, lease: Duration::from_secs(1), ..quick() };
        let runner = s.runner(config.clone());
        let id = runner.start_execution(s.workflow.dag.name(), &Context::new(), None).unwrap();
        wait_for("the deferral", || s.lines().len() == 2);
        assert_eq!(runner.live_workers(), 2, "the deferred thread and its replacement");
        let started = Instant::now();
        runner.shutdown();
        assert!(started.elapsed() < Duration::from_secs(10), "shutdown waited for the deferral");
        let paused = format!("pause: {:?}", SlotError::RunnerShuttingDown);
        assert_eq!(s.lines(), ["releasing", "released, held=false", paused.as_str()]);
        let store = open_store_at(&s.url);
        assert_eq!(store.task_records(&id).unwrap()[0].status, TaskStatus::Running, "the outcome is not recorded");
        // Another runner takes the attempt over once the lease lapses.
        flag.store(true, Ordering::SeqCst);
        let next = s.runner(config);
        let record = next.wait(&id, Some(Duration::from_secs(30))).unwrap();
        next.shutdown();
        assert_eq!(record.status, ExecutionStatus::Completed, "{:?}", record.error_message);
        assert_eq!(store.task_records(&id).unwrap()[0].attempts, 2);
    }

    #[test]
    fn a_deferral_past_the_time_limit_times_the_attempt_out_without_a_spare_worker() {
        let mut waiter = task("waiter", &[]);
        waiter.timeout = Some(Duration::from_millis(300));
        let s = setup(waiter, Arc::new(AtomicBool::new(false)), None);
        let runner = s.runner(RunnerConfig { max_concurrent_tasks: 1, ..quick() });
        let record = runner.execute(s.workflow.dag.name(), &Context::new()).unwrap();
        assert_eq!(record.status, ExecutionStatus::Failed);
        let message = record.error_message.unwrap();
        assert!(message.contains("TimeoutError") && message.contains("timed out"), "{message}");
        wait_for("the deferred body to stop", || s.lines().len() == 3);
        assert_eq!(s.lines()[2], format!("pause: {:?}", SlotError::AttemptGivenUp));
        // The deferral's replacement is the one worker left: no second replacement.
        assert_eq!(runner.live_workers(), 1);
        runner.shutdown();
    }
}
