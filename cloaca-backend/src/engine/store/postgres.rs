//! The PostgreSQL store: a small connection pool, claims with
//! `FOR UPDATE SKIP LOCKED`, and `LISTEN/NOTIFY` so that runner processes on
//! different machines wake each other instead of polling.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Config, GenericClient, NoTls, Statement};

use super::sql::{self, postgres_dialect, Conn, Param, Row, SqlBackend};
use super::{schema_digest, Channel, EventHandler};
use crate::engine::error::{EngineError, Result};
use crate::engine::tenants::quote_identifier;

/// How often a transaction that lost a deadlock / serialization conflict is retried.
const CONFLICT_RETRIES: usize = 5;
/// Key of the advisory lock that serialises schema migrations across
/// processes (of the default schema; see [`SchemaScope`]).
const MIGRATION_LOCK_KEY: i64 = 0x636c_6f61_6361; // "cloaca"

/// Executions and task attempts in one PostgreSQL database.
pub struct PostgresStore {
    config: Config,
    /// `host:port/database`, for messages (never the password).
    target: String,
    pool: Mutex<Pool>,
    returned: Condvar,
    /// Server process ids of this store's connections: notifications they
    /// sent are this process's own news, already delivered in-process.
    own_backends: Arc<Mutex<HashSet<i32>>>,
    /// `SET search_path` for a runner confined to one schema.
    search_path: Option<String>,
    scope: Arc<SchemaScope>,
}

/// The notification channel names of one store's schema, and the key of
/// its migration lock (per schema, so that tenants never wait for each other).
struct SchemaScope {
    work: String,
    done: String,
    migration_lock: i64,
}

impl SchemaScope {
    fn new(schema: Option<&str>) -> Self {
        let migration_lock = schema.map_or(MIGRATION_LOCK_KEY, |s| i64::from_be_bytes(schema_digest(s)));
        SchemaScope { work: Channel::Work.name_in(schema), done: Channel::Done.name_in(schema), migration_lock }
    }

    fn name(&self, channel: Channel) -> &str {
        match channel {
            Channel::Work => &self.work,
            Channel::Done => &self.done,
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<PgConn>,
    open: usize,
    max: usize,
}

/// A pooled connection with its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    /// `BEGIN` plus the server's own commit durability, for the transactions
    /// that must be durable (see [`PostgresStore::connect_pooled`]).
    begin_durable: String,
}

/// A connection checked out of the pool; goes back on drop unless broken.
struct Checkout<'a> {
    store: &'a PostgresStore,
    conn: Option<PgConn>,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        let mut pool = lock(&self.store.pool);
        match self.conn.take() {
            Some(conn) if !conn.client.is_closed() => pool.idle.push(conn),
            _ => pool.open -= 1,
        }
        drop(pool);
        self.store.returned.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PostgresStore {
    /// Connects (failing fast when the server is unreachable) and migrates.
    /// With `schema`, every table lives in that schema (created if missing)
    /// and nothing outside it is visible to the store.
    pub fn open(url: &str, schema: Option<&str>, pool_size: usize, now: i64) -> Result<Self> {
        if let Some(schema) = schema {
            crate::engine::tenants::validate_name("schema name", schema)?;
        }
        let config = connection_config(url)?;
        let target = describe_target(&config);
        let store = PostgresStore {
            config,
            target,
            pool: Mutex::new(Pool { max: pool_size.max(1), ..Pool::default() }),
            returned: Condvar::new(),
            own_backends: Arc::new(Mutex::new(HashSet::new())),
            search_path: schema.map(|s| format!("SET search_path TO {}", quote_identifier(s))),
            scope: Arc::new(SchemaScope::new(schema)),
        };
        if let Some(schema) = schema {
            store.ensure_schema(schema)?;
        }
        store.write("applying schema migrations", |c| sql::migrate(c, true, now))?;
        Ok(store)
    }

    /// Creates `schema` unless it exists. Looked up first: a tenant may use
    /// its own schema without the right to create schemas in the database.
    fn ensure_schema(&self, schema: &str) -> Result<()> {
        let action = "creating the runner's schema";
        let mut checkout = self.checkout()?;
        let client = &mut checkout.conn.as_mut().expect("a checkout holds a connection").client;
        let found = client.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).map_err(|e| db(action, &e))?;
        if found.is_none() {
            client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(schema))).map_err(|e| db(action, &e))?;
        }
        Ok(())
    }

    fn connect(&self) -> Result<Client> {
        self.config.connect(NoTls).map_err(|e| EngineError::Unavailable { target: self.target.clone(), reason: error_text(&e) })
    }

    /// A pool connection, its server process id remembered as our own.
    ///
    /// Single statements on it (claims, lease renewals, reads) commit
    /// without waiting for the WAL flush: losing one in a server crash only
    /// makes a task run again, which at-least-once delivery allows. The
    /// transactions that record outcomes and create executions set the
    /// server's own `synchronous_commit` back for themselves, so they are as
    /// durable as the server is configured to be.
    fn connect_pooled(&self) -> Result<PgConn> {
        let mut client = self.connect()?;
        let fail = |e: postgres::Error| EngineError::database("opening a connection", error_text(&e));
        let row = client.query_one("SELECT pg_backend_pid(), current_setting('synchronous_commit')", &[]).map_err(fail)?;
        let pid: i32 = row.try_get(0).map_err(fail)?;
        let durability: String = row.try_get(1).map_err(fail)?;
        let durability = match durability.as_str() {
            level @ ("on" | "off" | "local" | "remote_write" | "remote_apply") => level.to_string(),
            _ => "on".to_string(),
        };
        client.batch_execute("SET synchronous_commit TO off").map_err(fail)?;
        if let Some(search_path) = &self.search_path {
            client.batch_execute(search_path).map_err(fail)?;
        }
        lock(&self.own_backends).insert(pid);
        Ok(PgConn { client, statements: HashMap::new(), begin_durable: format!("BEGIN; SET LOCAL synchronous_commit TO {durability}") })
    }

    fn checkout(&self) -> Result<Checkout<'_>> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(Checkout { store: self, conn: Some(conn) });
            }
            if pool.open < pool.max {
                pool.open += 1;
                drop(pool);
                return match self.connect_pooled() {
                    Ok(conn) => Ok(Checkout { store: self, conn: Some(conn) }),
                    Err(e) => {
                        lock(&self.pool).open -= 1;
                        Err(e)
                    }
                };
            }
            pool = self.returned.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl SqlBackend for PostgresStore {
    /// One transaction, committed with the server's own durability; retried
    /// from the start when PostgreSQL aborts it for a deadlock or
    /// serialization conflict.
    fn write<T>(&self, action: &'static str, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut checkout = self.checkout()?;
            let PgConn { client, statements, begin_durable } = checkout.conn.as_mut().expect("a checkout holds a connection");
            client.batch_execute(begin_durable).map_err(|e| EngineError::database(action, error_text(&e)))?;
            let mut conn = PgConnection { client, statements, scope: &self.scope, conflict: false };
            let result = f(&mut conn);
            let conflict = conn.conflict;
            let outcome = match result {
                Ok(value) => match client.batch_execute("COMMIT") {
                    Ok(()) => return Ok(value),
                    Err(e) if is_conflict(&e) => Err(EngineError::database(action, error_text(&e))),
                    Err(e) => return Err(EngineError::database(action, error_text(&e))),
                },
                Err(e) => {
                    if client.batch_execute("ROLLBACK").is_err() {
                        // Never hand out a connection stuck in a transaction.
                        checkout.conn = None;
                    }
                    if !conflict {
                        return Err(e);
                    }
                    Err(e)
                }
            };
            if attempt >= CONFLICT_RETRIES {
                return outcome;
            }
        }
    }

    /// Autocommit on a pooled connection: no BEGIN / COMMIT round trips, and
    /// no wait for the WAL flush (see `connect_pooled`).
    fn single<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut checkout = self.checkout()?;
        let PgConn { client, statements, .. } = checkout.conn.as_mut().expect("a checkout holds a connection");
        f(&mut PgConnection { client, statements, scope: &self.scope, conflict: false })
    }

    fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        let mut client = self.connect()?;
        subscribe(&mut client, &self.scope).map_err(|e| EngineError::database("listening for notifications", error_text(&e)))?;
        let config = self.config.clone();
        let own = self.own_backends.clone();
        let scope = self.scope.clone();
        let handle = std::thread::Builder::new()
            .name("cloaca-listener".into())
            .spawn(move || listen_loop(client, config, scope, on_event, own, stop))
            .map_err(|e| EngineError::database("starting the notification listener", e))?;
        Ok(Some(handle))
    }
}

/// The connection settings of `url`, failing fast (10 s) when the server
/// cannot be reached unless the URL sets its own connect_timeout.
pub fn connection_config(url: &str) -> Result<Config> {
    let mut config = Config::from_str(url).map_err(|e| EngineError::InvalidUrl {
        url: url.to_string(),
        reason: format!("{e}; use postgresql://user:password@host:port/database"),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

/// `host:port/database` of a connection configuration (never the password).
pub fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// A database error while doing `action`, with the server's message.
pub fn db(action: &'static str, e: &postgres::Error) -> EngineError {
    EngineError::database(action, error_text(e))
}

/// The error with its causes ("error connecting to server: Connection refused").
pub fn error_text(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn is_conflict(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
}

/// A client or transaction as the shared SQL layer's [`Conn`].
struct PgConnection<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<&'static str, Statement>,
    scope: &'a SchemaScope,
    conflict: bool,
}

impl<C: GenericClient> PgConnection<'_, C> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt =
            self.client.prepare(&postgres_dialect(sql)).map_err(|e| EngineError::database("preparing a statement", error_text(&e)))?;
        self.statements.insert(sql, stmt.clone());
        Ok(stmt)
    }

    fn fail(&mut self, action: &'static str, e: postgres::Error) -> EngineError {
        self.conflict |= is_conflict(&e);
        EngineError::database(action, error_text(&e))
    }
}

fn references<'p>(params: &'p [Param<'p>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            Param::Int(i) => i as &(dyn ToSql + Sync),
            Param::Text(t) => t as &(dyn ToSql + Sync),
            Param::NullableText(t) => t as &(dyn ToSql + Sync),
            Param::NullableInt(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

impl<C: GenericClient> Conn for PgConnection<'_, C> {
    fn execute(&mut self, sql: &'static str, params: &[Param]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let result = self.client.execute(&stmt, &references(params));
        result.map_err(|e| self.fail("writing state", e))
    }

    fn query(&mut self, sql: &'static str, params: &[Param], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()> {
        let stmt = self.statement(sql)?;
        let result = self.client.query(&stmt, &references(params));
        let rows = result.map_err(|e| self.fail("reading state", e))?;
        for row in &rows {
            each(&PgRow(row))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let result = self.client.batch_execute(sql);
        result.map_err(|e| self.fail("applying schema migrations", e))
    }

    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()> {
        const NOTIFY: &str = "SELECT pg_notify(CAST(?1 AS TEXT), CAST(?2 AS TEXT))";
        let name = self.scope.name(channel);
        self.query(NOTIFY, &[Param::Text(name), Param::Text(payload)], &mut |_| Ok(()))
    }

    fn lock_for_migration(&mut self) -> Result<()> {
        const LOCK: &str = "SELECT pg_advisory_xact_lock(?1)";
        let key = self.scope.migration_lock;
        self.query(LOCK, &[Param::Int(key)], &mut |_| Ok(()))
    }
}

struct PgRow<'r>(&'r postgres::Row);

fn column<'r, T: postgres::types::FromSql<'r>>(row: &'r postgres::Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| EngineError::database("reading a column", error_text(&e)))
}

impl Row for PgRow<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        column(self.0, i)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        column(self.0, i)
    }
    fn text(&self, i: usize) -> Result<String> {
        column(self.0, i)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        column(self.0, i)
    }
}

fn subscribe(client: &mut Client, scope: &SchemaScope) -> std::result::Result<(), postgres::Error> {
    client.batch_execute(&format!("LISTEN {}; LISTEN {};", quote_identifier(&scope.work), quote_identifier(&scope.done)))
}

/// Delivers notifications until `stop`; reconnects when the connection drops
/// (waking the workers so that nothing missed meanwhile is left waiting).
fn listen_loop(
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
                match iter.next() {
                    Ok(Some(n)) => {
                        if lock(&own).contains(&n.process_id()) {
                            continue;
                        }
                        let channel = if n.channel() == scope.done { Channel::Done } else { Channel::Work };
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
