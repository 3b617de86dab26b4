//! Copies the WAL back into the database file on a thread of its own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: that commit, and every thread waiting for the connection,
//! waits for a thousand page writes and two fsyncs. Here commits only count
//! themselves; every [`COMMITS_PER_CHECKPOINT`] of them wake a thread that
//! checkpoints through a connection of its own. A passive checkpoint waits
//! for nobody and nobody waits for it: writers go on appending meanwhile.
//! A second, short pass then copies what they appended, with this
//! process's writers held off, so that the next commit finds the log all
//! copied and starts it over from its beginning.
//! The main connection keeps an automatic checkpoint at a far higher
//! threshold ([`BACKSTOP_PAGES`]), so that the WAL stays bounded even if
//! this thread falls behind.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use crate::engine::sync::{lock, wait};

/// Commits between two checkpoints: with the 5 to 10 pages a task's
/// commit writes, about SQLite's default threshold of 1,000 pages.
pub(super) const COMMITS_PER_CHECKPOINT: u64 = 128;
/// The main connection's own automatic checkpoint, for a thread that falls behind.
pub(super) const BACKSTOP_PAGES: i64 = 10_000;

pub(super) struct Checkpointer {
    commits: AtomicU64,
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Checkpoints asked for and not yet started.
    asked: u64,
    stopping: bool,
}

impl Checkpointer {
    /// Starts the thread, with its connection on `path`; None when the
    /// connection or the thread cannot be had (SQLite then checkpoints
    /// inside commits as usual: the caller keeps the default threshold).
    /// `hold_writers` runs what it is given while no writer of this
    /// process can commit.
    pub(super) fn start(path: &Path, hold_writers: impl Fn(&mut dyn FnMut()) + Send + 'static) -> Option<Checkpointer> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX).ok()?;
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cloaca-checkpoint".into())
            .spawn(move || checkpoint_when_asked(&conn, &thread_shared, hold_writers))
            .ok()?;
        Some(Checkpointer { commits: AtomicU64::new(0), shared, thread: Mutex::new(Some(thread)) })
    }

    /// Counts a commit; every [`COMMITS_PER_CHECKPOINT`]th asks for a checkpoint.
    pub(super) fn committed(&self) {
        if (self.commits.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(COMMITS_PER_CHECKPOINT) {
            lock(&self.shared.0).asked += 1;
            self.shared.1.notify_one();
        }
    }

    /// Stops the thread and closes its connection, so that the main
    /// connection, closed last, checkpoints all and removes the WAL.
    pub(super) fn stop(&self) {
        lock(&self.shared.0).stopping = true;
        self.shared.1.notify_one();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";

fn checkpoint_when_asked(conn: &Connection, shared: &(Mutex<State>, Condvar), hold_writers: impl Fn(&mut dyn FnMut())) {
    let (state, asked) = shared;
    loop {
        {
            let mut state = lock(state);
            while state.asked == 0 && !state.stopping {
                state = wait(asked, state);
            }
            if state.stopping {
                return;
            }
            // Requests that piled up while one ran are served by one.
            state.asked = 0;
        }
        // A failure (the file went away, the disk is full) leaves the WAL
        // to the next try or to the main connection's backstop.
        let _ = conn.query_row(PASSIVE, [], |_| Ok(()));
        // This process's writers appended meanwhile, so the checkpoint
        // ended behind the log, and a log is started again from its
        // beginning only by a commit that finds it all copied: the WAL
        // would grow to the backstop, every commit writing new blocks of
        // the file (and, at FULL, fsyncing their allocation). A second
        // pass with the writers held off copies the few frames left.
        hold_writers(&mut || {
            let _ = conn.query_row(PASSIVE, [], |_| Ok(()));
        });
    }
}
