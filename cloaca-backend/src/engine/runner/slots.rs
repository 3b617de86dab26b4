//! Deferred attempts: giving a concurrency slot back and taking one again.
//!
//! The worker threads are the slots (`max_concurrent_tasks` of them), and a
//! deferred body still blocks its thread. So deferring starts a replacement
//! worker, which holds the slot meanwhile; taking a slot again waits until a
//! worker is between attempts, and that worker hands its slot over and ends.
//! Every worker that holds a slot therefore runs at most one attempt, and no
//! more than `max_concurrent_tasks` attempts hold slots at any moment.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::shared::{Attempt, Inflight, Shared};
use super::workers::spawn_worker;
use crate::engine::sync::{lock, wait_timeout};
use crate::engine::workflow::{SlotError, Slots};

/// How often a wait for a slot looks again at what nothing signals (the
/// runner's stop is signalled; this only bounds a lost wake-up).
const RECHECK: Duration = Duration::from_millis(200);

impl Shared {
    /// The attempt on `worker`, if it may go on waiting.
    fn waiting_attempt<'a>(&self, inflight: &'a mut Inflight, worker: usize) -> Result<&'a mut Attempt, SlotError> {
        let attempt = inflight.attempts.get_mut(&worker).ok_or(SlotError::AttemptOver)?;
        if attempt.timed_out {
            return Err(SlotError::AttemptGivenUp);
        }
        if attempt.cancellation.is_requested() {
            return Err(SlotError::ExecutionCancelled);
        }
        if self.is_stopping() {
            return Err(SlotError::RunnerShuttingDown);
        }
        Ok(attempt)
    }

    /// Called by a worker between attempts: hands its slot to a deferred
    /// attempt that wants one. True when it did, and must end.
    pub(crate) fn hand_over_slot(&self) -> bool {
        if self.slot_requests.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let mut inflight = lock(&self.inflight);
        let Some(attempt) = inflight.attempts.values_mut().find(|a| a.wants_slot) else {
            return false;
        };
        attempt.wants_slot = false;
        attempt.deferred = false;
        self.slot_requests.fetch_sub(1, Ordering::SeqCst);
        drop(inflight);
        self.inflight_cv.notify_all();
        // This worker may have been the one meant to claim a task just readied.
        self.wake_workers(1);
        true
    }

    /// Forgets a deferred attempt's request for a slot (it stopped waiting).
    pub(crate) fn withdraw_slot_request(&self, attempt: &mut Attempt) {
        if attempt.wants_slot {
            attempt.wants_slot = false;
            self.slot_requests.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wait_for_slot<'a>(&'a self, mut inflight: MutexGuard<'a, Inflight>, worker: usize) -> Result<(), SlotError> {
        loop {
            let attempt = inflight.attempts.get_mut(&worker).ok_or(SlotError::AttemptOver)?;
            if !attempt.wants_slot {
                // Handed over, unless the supervisor withdrew the request.
                return if attempt.deferred { Err(SlotError::AttemptGivenUp) } else { Ok(()) };
            }
            if let Err(e) = self.waiting_attempt(&mut inflight, worker) {
                if let Some(attempt) = inflight.attempts.get_mut(&worker) {
                    self.withdraw_slot_request(attempt);
                }
                return Err(e);
            }
            inflight = wait_timeout(&self.inflight_cv, inflight, RECHECK).0;
        }
    }
}

impl Slots for Shared {
    fn release(&self, worker: usize) -> Result<(), SlotError> {
        {
            let mut inflight = lock(&self.inflight);
            let attempt = self.waiting_attempt(&mut inflight, worker)?;
            if attempt.deferred {
                return Ok(());
            }
            attempt.deferred = true;
        }
        if let Some(me) = self.me.upgrade() {
            spawn_worker(&me);
        }
        Ok(())
    }

    fn pause(&self, worker: usize, interval: Duration, deadline: Option<Instant>) -> Result<(), SlotError> {
        let until = Instant::now() + interval;
        let until = deadline.map_or(until, |d| d.min(until));
        let mut inflight = lock(&self.inflight);
        loop {
            self.waiting_attempt(&mut inflight, worker)?;
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(SlotError::TimeLimitPassed);
            }
            if now >= until {
                return Ok(());
            }
            inflight = wait_timeout(&self.inflight_cv, inflight, (until - now).min(RECHECK)).0;
        }
    }

    fn reacquire(&self, worker: usize) -> Result<(), SlotError> {
        let mut inflight = lock(&self.inflight);
        let attempt = self.waiting_attempt(&mut inflight, worker)?;
        if !attempt.deferred {
            return Ok(());
        }
        if !attempt.wants_slot {
            attempt.wants_slot = true;
            self.slot_requests.fetch_add(1, Ordering::SeqCst);
        }
        // An idle worker hands its slot over as soon as it wakes.
        self.wake_workers(1);
        self.wait_for_slot(inflight, worker)
    }

    fn is_held(&self, worker: usize) -> bool {
        lock(&self.inflight).attempts.get(&worker).is_some_and(|a| !a.deferred)
    }

    fn outcome_is_discarded(&self, worker: usize) -> bool {
        lock(&self.inflight).attempts.get(&worker).is_some_and(|a| a.timed_out || (a.deferred && self.is_stopping()))
    }
}
