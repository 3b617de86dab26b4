//! A small pool of PostgreSQL connections, each with its prepared statements.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};

use postgres::{Client, Config, NoTls, Statement};

use crate::engine::error::{Error, Result};
use crate::engine::sync::{lock, wait};

/// Connections to one server, at most `max` open at once.
pub(super) struct Pool {
    pub(super) config: Config,
    /// `host:port/database`, for messages (never the password).
    pub(super) target: String,
    /// Server process ids of this pool's connections: notifications they
    /// sent are this process's own news, already delivered in-process.
    pub(super) own_backends: Arc<Mutex<HashSet<i32>>>,
    /// `SET search_path` for a runner confined to one schema.
    search_path: Option<String>,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<PgConn>,
    open: usize,
    max: usize,
    /// No connection is kept or opened any more.
    closed: bool,
}

/// A pooled connection with its prepared statements.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) statements: HashMap<&'static str, Statement>,
    /// `BEGIN` plus the server's own commit durability, for the transactions
    /// that must be durable (see [`Pool::connect_pooled`]).
    pub(super) begin_durable: String,
    /// The server's own `synchronous_commit` level.
    pub(super) durability: String,
}

/// A connection checked out of the pool; goes back on drop unless broken.
pub(super) struct Checkout<'a> {
    pool: &'a Pool,
    pub(super) conn: Option<PgConn>,
}

impl Checkout<'_> {
    pub(super) fn get(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a checkout holds its connection until dropped")
    }
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.pool.state);
        match self.conn.take() {
            Some(conn) if !conn.client.is_closed() && !state.closed => state.idle.push(conn),
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}

impl Pool {
    pub(super) fn new(config: Config, target: String, search_path: Option<String>, max: usize) -> Self {
        Pool {
            config,
            target,
            own_backends: Arc::new(Mutex::new(HashSet::new())),
            search_path,
            state: Mutex::new(PoolState { max: max.max(1), ..PoolState::default() }),
            returned: Condvar::new(),
        }
    }

    /// A new connection outside the pool (failing fast when the server is unreachable).
    pub(super) fn connect(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| Error::Connect { target: self.target.clone(), source: e.into() })
    }

    /// A pool connection, its server process id remembered as our own.
    ///
    /// Single statements on it (claims, lease renewals, reads) commit
    /// without waiting for the WAL flush: losing one in a server crash only
    /// makes a task run again, which at-least-once delivery allows. The
    /// transactions that record outcomes and create executions set the
    /// server's own `synchronous_commit` back for themselves, so they are as
    /// durable as the server is configured to be.
    ///
    /// Its prepared statements use one generic plan each: every statement
    /// here finds its rows by key, and planning one anew at each execution
    /// (which PostgreSQL does where a plan for the given values looks
    /// cheaper, as for a completion with no dependents) cost a 1-task
    /// workflow several tenths of a millisecond.
    fn connect_pooled(&self) -> Result<PgConn> {
        let mut client = self.connect()?;
        let fail = |e: postgres::Error| Error::database("opening a connection", e);
        let row = client.query_one("SELECT pg_backend_pid(), current_setting('synchronous_commit')", &[]).map_err(fail)?;
        let pid: i32 = row.try_get(0).map_err(fail)?;
        let durability: String = row.try_get(1).map_err(fail)?;
        let durability = match durability.as_str() {
            level @ ("on" | "off" | "local" | "remote_write" | "remote_apply") => level.to_string(),
            _ => "on".to_string(),
        };
        client.batch_execute("SET synchronous_commit TO off; SET plan_cache_mode TO force_generic_plan").map_err(fail)?;
        if let Some(search_path) = &self.search_path {
            client.batch_execute(search_path).map_err(fail)?;
        }
        lock(&self.own_backends).insert(pid);
        let begin_durable = format!("BEGIN; SET LOCAL synchronous_commit TO {durability}");
        Ok(PgConn { client, statements: HashMap::new(), begin_durable, durability })
    }

    /// Closes the idle connections and refuses new checkouts.
    pub(super) fn close(&self) {
        let idle = {
            let mut state = lock(&self.state);
            state.closed = true;
            state.open -= state.idle.len();
            std::mem::take(&mut state.idle)
        };
        drop(idle);
        self.returned.notify_all();
    }

    /// An idle connection, a new one while fewer than `max` are open, or
    /// the next one returned.
    pub(super) fn checkout(&self) -> Result<Checkout<'_>> {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return Err(Error::ShutDown);
            }
            if let Some(conn) = state.idle.pop() {
                return Ok(Checkout { pool: self, conn: Some(conn) });
            }
            if state.open < state.max {
                state.open += 1;
                drop(state);
                return match self.connect_pooled() {
                    Ok(conn) => Ok(Checkout { pool: self, conn: Some(conn) }),
                    Err(e) => {
                        lock(&self.state).open -= 1;
                        Err(e)
                    }
                };
            }
            state = wait(&self.returned, state);
        }
    }
}
