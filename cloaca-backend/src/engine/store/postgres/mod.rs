//! The PostgreSQL backend: a small connection pool ([`pool`]), claims with
//! `FOR UPDATE SKIP LOCKED`, `LISTEN/NOTIFY` so that runner processes on
//! different machines wake each other instead of polling ([`listen`]),
//! checked and quoted schema and role names ([`identifiers`]) and tenant
//! administration ([`admin`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use postgres::types::ToSql;
use postgres::{GenericClient, Statement};

use super::conn::{postgres_dialect, Conn, Param, Row};
use super::migrations;
use super::records::{Channel, EventHandler};
use crate::engine::error::{Error, Result};
use crate::engine::url::postgres::{connection_config, describe_target};
use crate::engine::url::DatabaseUrl;

pub(crate) mod admin;
pub(crate) mod identifiers;
pub(crate) mod listen;
mod pool;

use identifiers::{quote_identifier, validate_name};
use listen::SchemaScope;
use pool::{PgConn, Pool};

/// How often a transaction that lost a deadlock / serialization conflict is retried.
const CONFLICT_RETRIES: usize = 5;

/// One PostgreSQL database (or one schema of it).
pub(crate) struct PostgresDb {
    pool: Pool,
    scope: Arc<SchemaScope>,
}

impl PostgresDb {
    /// Each statement is a round trip to the server (see `Conn::is_remote`).
    pub(crate) const REMOTE: bool = true;

    /// Connects (failing fast when the server is unreachable) and migrates.
    /// With `schema`, every table lives in that schema (created if missing)
    /// and nothing outside it is visible.
    pub(crate) fn open(url: &DatabaseUrl, schema: Option<&str>, pool_size: usize, now: i64) -> Result<Self> {
        let DatabaseUrl::Postgres(url) = url else {
            return Err(Error::InvalidUrl { url: format!("{url:?}"), reason: "the postgres backend opens postgresql:// URLs only".into() });
        };
        if let Some(schema) = schema {
            validate_name("schema name", schema)?;
        }
        let config = connection_config(url)?;
        let target = describe_target(&config);
        let search_path = schema.map(|s| format!("SET search_path TO {}", quote_identifier(s)));
        let db = PostgresDb { pool: Pool::new(config, target, search_path, pool_size), scope: Arc::new(SchemaScope::new(schema)) };
        if let Some(schema) = schema {
            db.ensure_schema(schema)?;
        }
        db.write("applying schema migrations", |c| migrations::migrate(c, true, now))?;
        Ok(db)
    }

    /// Creates `schema` unless it exists. Looked up first: a tenant may use
    /// its own schema without the right to create schemas in the database.
    fn ensure_schema(&self, schema: &str) -> Result<()> {
        let action = "creating the runner's schema";
        let mut checkout = self.pool.checkout()?;
        let client = &mut checkout.get().client;
        let found =
            client.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).map_err(|e| Error::database(action, e))?;
        if found.is_none() {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(schema)))
                .map_err(|e| Error::database(action, e))?;
        }
        Ok(())
    }

    /// One transaction, committed with the server's own durability; run
    /// again from the start when PostgreSQL aborts it for a deadlock or
    /// serialization conflict.
    pub(crate) fn write<T>(&self, action: &'static str, mut f: impl FnMut(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut checkout = self.pool.checkout()?;
            let PgConn { client, statements, begin_durable, durability } = checkout.get();
            client.batch_execute(begin_durable).map_err(|e| Error::database(action, e))?;
            let result = f(&mut PgConnection { client, statements, scope: &self.scope, durability });
            let error = match result {
                Ok(value) => match client.batch_execute("COMMIT") {
                    Ok(()) => return Ok(value),
                    Err(e) => Error::database(action, e),
                },
                Err(e) => {
                    if client.batch_execute("ROLLBACK").is_err() {
                        // Never hand out a connection stuck in a transaction.
                        checkout.conn = None;
                    }
                    e
                }
            };
            if error.is_transient() && !error.is_conflict() {
                // The connection is suspect (dropped, or its server restarted):
                // the next attempt opens a fresh one.
                checkout.conn = None;
            }
            if !error.is_conflict() || attempt >= CONFLICT_RETRIES {
                return Err(error);
            }
        }
    }

    /// Autocommit on a pooled connection: no BEGIN / COMMIT round trips, and
    /// no wait for the WAL flush (see `Pool::connect_pooled`).
    pub(crate) fn single<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut checkout = self.pool.checkout()?;
        let PgConn { client, statements, durability, .. } = checkout.get();
        let result = f(&mut PgConnection { client, statements, scope: &self.scope, durability });
        if result.as_ref().is_err_and(Error::is_transient) {
            checkout.conn = None;
        }
        result
    }

    /// A claim: autocommit statements, which do not wait for the WAL flush
    /// (a claim lost to a crash only makes the attempt run again).
    pub(crate) fn write_relaxed<T>(&self, _action: &'static str, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.single(f)
    }

    /// Closes the idle connections now; one still checked out closes when returned.
    pub(crate) fn close(&self) {
        self.pool.close();
    }

    /// `host:port/database`, for messages (never the password).
    pub(crate) fn target(&self) -> &str {
        &self.pool.target
    }

    /// Starts a thread that delivers other processes' notifications to
    /// `on_event` until `stop` is set.
    pub(crate) fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        let mut client = self.pool.connect()?;
        listen::subscribe(&mut client, &self.scope).map_err(|e| Error::database("listening for notifications", e))?;
        let config = self.pool.config.clone();
        let own = self.pool.own_backends.clone();
        let scope = self.scope.clone();
        let handle = std::thread::Builder::new()
            .name("cloaca-listener".into())
            .spawn(move || listen::listen_loop(client, config, scope, on_event, own, stop))
            .map_err(|source| Error::Thread { what: "the notification listener", source })?;
        Ok(Some(handle))
    }
}

/// A client or transaction as the shared SQL layer's [`Conn`].
struct PgConnection<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<&'static str, Statement>,
    scope: &'a SchemaScope,
    durability: &'a str,
}

impl<C: GenericClient> PgConnection<'_, C> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(&postgres_dialect(sql)).map_err(|e| Error::database("preparing a statement", e))?;
        self.statements.insert(sql, stmt.clone());
        Ok(stmt)
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
        self.client.execute(&stmt, &references(params)).map_err(|e| Error::database("writing state", e))
    }

    fn query(&mut self, sql: &'static str, params: &[Param], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()> {
        let stmt = self.statement(sql)?;
        let rows = self.client.query(&stmt, &references(params)).map_err(|e| Error::database("reading state", e))?;
        for row in &rows {
            each(&PgRow(row))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(|e| Error::database("applying schema migrations", e))
    }

    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()> {
        const NOTIFY: &str = "SELECT pg_notify(CAST(?1 AS TEXT), CAST(?2 AS TEXT))";
        let name = self.scope.name(channel);
        self.query(NOTIFY, &[Param::Text(name), Param::Text(payload)], &mut |_| Ok(()))
    }

    fn channel_name(&self, channel: Channel) -> Option<&str> {
        Some(self.scope.name(channel))
    }

    fn locks_rows(&self) -> bool {
        true
    }

    fn is_remote(&self) -> bool {
        PostgresDb::REMOTE
    }

    fn commit_level(&self) -> Option<&str> {
        Some(self.durability)
    }

    fn lock_for_migration(&mut self) -> Result<()> {
        const LOCK: &str = "SELECT pg_advisory_xact_lock(?1)";
        let key = self.scope.migration_lock;
        self.query(LOCK, &[Param::Int(key)], &mut |_| Ok(()))
    }
}

struct PgRow<'r>(&'r postgres::Row);

fn column<'r, T: postgres::types::FromSql<'r>>(row: &'r postgres::Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| Error::database("reading a column", e))
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
