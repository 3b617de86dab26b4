//! The SQLite store: one connection in WAL mode, shared by a runner's threads.
//!
//! SQLite has one writer at a time anyway, so a runner keeps a single
//! connection behind a mutex and every write is a `BEGIN IMMEDIATE`
//! transaction; other processes on the same file wait up to `busy_timeout`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::conn::{Conn, Param, Row};
use super::migrations;
use super::records::{Channel, EventHandler};
use checkpointer::Checkpointer;

mod checkpointer;
use crate::engine::error::{Error, Result};
use crate::engine::sync::lock;
use crate::engine::url::{DatabaseUrl, SqliteLocation, SqliteMode, SqliteUrl};

/// One SQLite database, behind one connection.
pub(crate) struct SqliteDb {
    /// None once closed: the runner has shut down. Shared with the
    /// checkpoint thread, which holds it to keep writers off briefly.
    conn: Arc<Mutex<Option<Open>>>,
    /// The file (or `sqlite://:memory:`), for messages.
    target: String,
    /// `PRAGMA synchronous = …` for the configured level, when claims may
    /// commit below it (WAL at FULL or EXTRA); None otherwise.
    durable_level: Option<String>,
    /// For a file in WAL mode: checkpoints off the committing thread.
    checkpointer: Option<Checkpointer>,
}

/// The open connection, and whether it is set to commit claims without an
/// fsync right now.
struct Open {
    conn: Connection,
    relaxed: bool,
}

impl Open {
    /// Sets the connection to commit without an fsync (`relaxed`) or at the
    /// configured level, unless it already does.
    fn commit_level(&mut self, relaxed: bool, durable_level: &Option<String>) -> Result<()> {
        let Some(durable) = durable_level else {
            return Ok(());
        };
        if self.relaxed == relaxed {
            return Ok(());
        }
        let pragma = if relaxed { "PRAGMA synchronous = NORMAL" } else { durable.as_str() };
        self.conn.execute_batch(pragma).map_err(|e| Error::database("setting the commit level", e))?;
        self.relaxed = relaxed;
        Ok(())
    }
}

/// `rusqlite::Connection` / `Transaction` as the shared SQL layer's [`Conn`].
struct SqliteConn<'a>(&'a Connection);

impl SqliteDb {
    /// Statements run in process (see `Conn::is_remote`).
    pub(crate) const REMOTE: bool = false;

    /// Opens (creating when allowed) and migrates the database of `url`.
    /// Nothing is written to a file that turns out not to be a usable
    /// cloaca database. SQLite has no schemas and one connection: `schema`
    /// and `pool_size` do not apply (the caller refuses a schema first).
    pub(crate) fn open(url: &DatabaseUrl, schema: Option<&str>, pool_size: usize, now: i64) -> Result<Self> {
        let _ = (schema, pool_size);
        let DatabaseUrl::Sqlite(url) = url else {
            return Err(Error::InvalidUrl { url: format!("{url:?}"), reason: "the sqlite backend opens sqlite:// URLs only".into() });
        };
        Self::open_sqlite(url, now)
    }

    fn open_sqlite(url: &SqliteUrl, now: i64) -> Result<Self> {
        let conn = match &url.location {
            SqliteLocation::Memory => Connection::open_in_memory().map_err(|e| unavailable(":memory:", e))?,
            SqliteLocation::File(path) => open_file(path, url)?,
        };
        let target = describe(&url.location);
        conn.busy_timeout(std::time::Duration::from_millis(u64::from(url.busy_timeout_ms))).map_err(|e| unavailable(&target, e))?;
        // A read before any write: a file that is not a database fails here, untouched.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).map_err(|e| unavailable(&target, e))?;
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(Error::Unavailable {
                target,
                reason: "it is read-only (mode=ro or no write permission), and a runner must write its state; \
                         open a writable file"
                    .into(),
            });
        }
        if url.location != SqliteLocation::Memory {
            let busy_for = std::time::Duration::from_millis(u64::from(url.busy_timeout_ms));
            retry_while_busy(busy_for, || conn.pragma_update(None, "journal_mode", &url.journal_mode))
                .map_err(|e| unavailable(&target, e))?;
        }
        conn.pragma_update(None, "synchronous", &url.synchronous).map_err(|e| unavailable(&target, e))?;
        // In WAL mode an fsync writes out every frame before it, so a claim
        // committed without one is made durable by the next completion's;
        // a power loss before that only makes the attempt run again. In the
        // other journal modes a lower level risks the file itself.
        let wal = conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0)).map_err(|e| unavailable(&target, e))?;
        let durable_level = (wal.eq_ignore_ascii_case("wal") && matches!(url.synchronous.as_str(), "FULL" | "EXTRA"))
            .then(|| format!("PRAGMA synchronous = {}", url.synchronous));
        let shared = Arc::new(Mutex::new(None));
        let checkpointer = match &url.location {
            SqliteLocation::File(path) if wal.eq_ignore_ascii_case("wal") => {
                let main = Arc::downgrade(&shared);
                Checkpointer::start(path, move |catch_up: &mut dyn FnMut()| {
                    if let Some(main) = main.upgrade() {
                        let _writers_wait = lock(&main);
                        catch_up();
                    }
                })
            }
            _ => None,
        };
        if checkpointer.is_some() {
            conn.pragma_update(None, "wal_autocheckpoint", checkpointer::BACKSTOP_PAGES).map_err(|e| unavailable(&target, e))?;
        }
        *lock(&shared) = Some(Open { conn, relaxed: false });
        let db = SqliteDb { conn: shared, target: target.clone(), durable_level, checkpointer };
        db.write("applying schema migrations", |c| migrations::migrate(c, false, now)).map_err(|e| match e {
            Error::Database { source, .. } => Error::Unavailable { target: target.clone(), reason: source.to_string() },
            other => other,
        })?;
        // Statistics for the planner, bounded to a few hundred rows per index
        // so that it stays quick on a long history. The statements do not
        // depend on them (see migration 4); a failure here (another process
        // holds the write lock past busy_timeout) only leaves them as they were.
        if let Some(open) = lock(&db.conn).as_ref() {
            let _ = open.conn.execute_batch("PRAGMA analysis_limit = 400; PRAGMA optimize = 0x10002;");
        }
        Ok(db)
    }

    /// One `BEGIN IMMEDIATE` transaction: it takes the write lock at once
    /// (waiting up to busy_timeout), so it cannot deadlock on a lock upgrade.
    pub(crate) fn write<T>(&self, action: &'static str, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.transaction(action, false, f)
    }

    /// [`SqliteDb::write`] for a claim: at FULL or EXTRA in WAL mode it
    /// commits without an fsync (see `durable_level`), so that a task
    /// costs one fsync, its completion's.
    pub(crate) fn write_relaxed<T>(&self, action: &'static str, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        self.transaction(action, true, f)
    }

    fn transaction<T>(&self, action: &'static str, relaxed: bool, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.conn);
        let open = guard.as_mut().ok_or(Error::ShutDown)?;
        open.commit_level(relaxed, &self.durable_level)?;
        let tx = open.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| Error::database(action, e))?;
        let value = f(&mut SqliteConn(&tx))?;
        tx.commit().map_err(|e| Error::database(action, e))?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.committed();
        }
        Ok(value)
    }

    pub(crate) fn single<T>(&self, f: impl FnOnce(&mut dyn Conn) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.conn);
        let open = guard.as_mut().ok_or(Error::ShutDown)?;
        open.commit_level(false, &self.durable_level)?;
        f(&mut SqliteConn(&open.conn))
    }

    /// Closes the connection now (checkpointing the WAL into the file), so
    /// that the file is left as it will stay once the runner has shut down.
    pub(crate) fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop();
        }
        drop(lock(&self.conn).take());
    }

    /// The file (or `sqlite://:memory:`), for messages.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// SQLite has no cross-process notifications: runners in other
    /// processes find new work at their next poll.
    pub(crate) fn listen(&self, on_event: EventHandler, stop: Arc<AtomicBool>) -> Result<Option<JoinHandle<()>>> {
        let _ = (on_event, stop);
        Ok(None)
    }
}

/// Runs `f` again while SQLite answers "busy" or "locked", for up to `limit`.
/// Changing the journal mode needs the file to itself, and SQLite returns
/// "busy" for it at once, without its busy handler, while another process
/// is opening the same new database.
fn retry_while_busy<T>(limit: std::time::Duration, mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Err(e)
                if matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
                    && started.elapsed() < limit =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn describe(location: &SqliteLocation) -> String {
    match location {
        SqliteLocation::Memory => "sqlite://:memory:".into(),
        SqliteLocation::File(path) => format!("{:?}", path.display().to_string()),
    }
}

fn unavailable(target: &str, e: rusqlite::Error) -> Error {
    let reason = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => "the file is not a SQLite database (cloaca left it untouched)".into(),
        Some(ErrorCode::ReadOnly) => "it is read-only, and a runner must write its state".into(),
        Some(ErrorCode::CannotOpen) => format!("SQLite cannot open it ({e})"),
        _ => e.to_string(),
    };
    Error::Unavailable { target: target.to_string(), reason }
}

fn open_file(path: &Path, url: &SqliteUrl) -> Result<Connection> {
    let shown = format!("{:?}", path.display().to_string());
    let fail = |reason: String| Error::Unavailable { target: shown.clone(), reason };
    if path.is_dir() {
        return Err(fail("it is a directory; give the path of a database file inside it".into()));
    }
    let absolute: PathBuf = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(parent) = absolute.parent() {
        if !parent.is_dir() {
            return Err(fail(format!("its directory {:?} does not exist", parent.display().to_string())));
        }
    }
    let flags = match url.mode {
        SqliteMode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
        SqliteMode::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        SqliteMode::ReadWriteCreate => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    };
    if !path.exists() && url.mode != SqliteMode::ReadWriteCreate {
        return Err(fail("it does not exist, and mode=ro / mode=rw do not create it (use mode=rwc)".into()));
    }
    Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(|e| unavailable(&shown, e))
}

impl Conn for SqliteConn<'_> {
    fn execute(&mut self, sql: &'static str, params: &[Param]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| Error::database("preparing a statement", e))?;
        let values = bind(params);
        stmt.execute(rusqlite::params_from_iter(values.iter())).map(|n| n as u64).map_err(|e| Error::database("writing state", e))
    }

    fn query(&mut self, sql: &'static str, params: &[Param], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()> {
        let mut stmt = self.0.prepare_cached(sql).map_err(|e| Error::database("preparing a statement", e))?;
        let values = bind(params);
        let mut rows = stmt.query(rusqlite::params_from_iter(values.iter())).map_err(|e| Error::database("reading state", e))?;
        while let Some(row) = rows.next().map_err(|e| Error::database("reading state", e))? {
            each(&SqliteRow(row))?;
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.0.execute_batch(sql).map_err(|e| Error::database("applying schema migrations", e))
    }

    fn notify(&mut self, _channel: Channel, _payload: &str) -> Result<()> {
        // Nobody can listen (see `SqliteDb::listen`).
        Ok(())
    }

    fn channel_name(&self, _channel: Channel) -> Option<&str> {
        None
    }

    fn locks_rows(&self) -> bool {
        false
    }

    fn is_remote(&self) -> bool {
        SqliteDb::REMOTE
    }

    fn commit_level(&self) -> Option<&str> {
        None
    }

    fn lock_for_migration(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The parameters as SQLite values, texts borrowed rather than copied.
fn bind<'p>(params: &'p [Param<'p>]) -> Vec<ToSqlOutput<'p>> {
    params
        .iter()
        .map(|p| match *p {
            Param::Int(i) | Param::NullableInt(Some(i)) => ToSqlOutput::Owned(SqlValue::Integer(i)),
            Param::Text(t) | Param::NullableText(Some(t)) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::NullableText(None) | Param::NullableInt(None) => ToSqlOutput::Owned(SqlValue::Null),
        })
        .collect()
}

struct SqliteRow<'r, 's>(&'r rusqlite::Row<'s>);

fn column<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, i: usize) -> Result<T> {
    row.get(i).map_err(|e| Error::database("reading a column", e))
}

impl Row for SqliteRow<'_, '_> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::store::migrations::{CREATE_MIGRATIONS_TABLE, MIGRATIONS, MIGRATIONS_VERSION};
    use std::time::Duration;

    use crate::engine::store::Store;

    fn temp_url() -> (PathBuf, DatabaseUrl) {
        let path = std::env::temp_dir().join(format!("cloaca-migration-test-{}.db", uuid::Uuid::new_v4()));
        (path.clone(), DatabaseUrl::parse(&format!("sqlite://{}", path.display())).unwrap())
    }

    fn versions(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT version FROM cloaca_schema_migrations ORDER BY version").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|v| v.unwrap()).collect()
    }

    #[test]
    fn an_older_database_is_migrated_and_keeps_its_rows() {
        let (path, url) = temp_url();
        {
            // A database written by a build that knew only migration 1.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(CREATE_MIGRATIONS_TABLE).unwrap();
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.execute("INSERT INTO cloaca_schema_migrations VALUES (1, 'old', 0)", []).unwrap();
            conn.execute(
                "INSERT INTO cloaca_executions (id, workflow_name, workflow_version, status, input_context, tasks_remaining, created_at)
                 VALUES ('kept', 'wf', 'v', 'completed', '{\"a\":1}', 0, 5)",
                [],
            )
            .unwrap();
        }
        let store = Store::open(&url, None, 1, Duration::ZERO, 10).unwrap();
        assert_eq!(versions(&path), (1..=MIGRATIONS_VERSION).collect::<Vec<_>>());
        let kept = store.get_execution("kept").unwrap().expect("the old row survives the migration");
        assert_eq!(kept.input["a"], serde_json::json!(1));
        drop(store);
        // Opening again applies nothing twice.
        Store::open(&url, None, 1, Duration::ZERO, 20).unwrap();
        assert_eq!(versions(&path), (1..=MIGRATIONS_VERSION).collect::<Vec<_>>());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn claims_commit_without_an_fsync_only_where_the_next_fsync_covers_them() {
        // PRAGMA synchronous: 1 NORMAL, 2 FULL, 3 EXTRA. (query, level of a claim, level of everything else)
        let cases = [
            ("_synchronous=FULL", 1, 2),
            ("_synchronous=EXTRA", 1, 3),
            ("_synchronous=NORMAL", 1, 1),
            // Outside WAL a lower level risks the file itself: claims stay at FULL.
            ("_synchronous=FULL&_journal_mode=DELETE", 2, 2),
        ];
        for (query, claim_level, durable_level) in cases {
            let path = std::env::temp_dir().join(format!("cloaca-levels-test-{}.db", uuid::Uuid::new_v4()));
            let url = DatabaseUrl::parse(&format!("sqlite://{}?{query}", path.display())).unwrap();
            let db = SqliteDb::open(&url, None, 1, 0).unwrap();
            let level = |c: &mut dyn Conn| c.query_one("PRAGMA synchronous", &[], |r| r.int(0));
            assert_eq!(db.write_relaxed("a claim", level).unwrap(), claim_level, "{query}: a claim");
            assert_eq!(db.write("a completion", level).unwrap(), durable_level, "{query}: a completion after a claim");
            db.write_relaxed("a claim", level).unwrap();
            assert_eq!(db.single(level).unwrap(), durable_level, "{query}: a single statement after a claim");
            db.close();
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }

    #[test]
    fn the_wal_is_copied_into_the_file_by_the_checkpoint_thread_not_by_commits() {
        let (path, url) = temp_url();
        let db = SqliteDb::open(&url, None, 1, 0).unwrap();
        let threshold = db.single(|c| c.query_one("PRAGMA wal_autocheckpoint", &[], |r| r.int(0))).unwrap();
        assert_eq!(threshold, checkpointer::BACKSTOP_PAGES, "a commit checkpoints only past the backstop");
        db.write("a table", |c| c.batch("CREATE TABLE filler (data BLOB)")).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // Each row takes a page of its own: far below the backstop, far above
        // what the thread lets the WAL hold.
        let rows = checkpointer::COMMITS_PER_CHECKPOINT * 3;
        for _ in 0..rows {
            db.write("a row", |c| c.execute("INSERT INTO filler VALUES (randomblob(3000))", &[])).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let copied = |len: u64| len >= before + checkpointer::COMMITS_PER_CHECKPOINT * 2 * 3000;
        while !copied(std::fs::metadata(&path).unwrap().len()) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(copied(len), "the file grew from {before} to only {len} bytes while the runner wrote {rows} pages");
        db.close();
        assert!(!Path::new(&format!("{}-wal", path.display())).exists(), "closing checkpoints all and removes the WAL");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_wal_starts_over_after_each_checkpoint_instead_of_growing() {
        let (path, url) = temp_url();
        let db = SqliteDb::open(&url, None, 1, 0).unwrap();
        db.write("a table", |c| c.batch("CREATE TABLE filler (data BLOB)")).unwrap();
        let wal = format!("{}-wal", path.display());
        let rounds = 20;
        let mut largest = 0;
        for _ in 0..checkpointer::COMMITS_PER_CHECKPOINT * rounds {
            db.write("a row", |c| c.execute("INSERT INTO filler VALUES (randomblob(3000))", &[])).unwrap();
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            // What a task's own work leaves between two commits.
            std::thread::sleep(Duration::from_micros(50));
        }
        // Each commit appends a page of its row and one of the table's
        // root, at least: a WAL that never started over would hold them all.
        let written = checkpointer::COMMITS_PER_CHECKPOINT * rounds * 2 * 4096;
        assert!(largest < written / 4, "the WAL grew to {largest} bytes while {written} bytes of frames were written");
        db.close();
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let (path, url) = temp_url();
        Store::open(&url, None, 1, Duration::ZERO, 0).unwrap();
        Connection::open(&path).unwrap().execute("INSERT INTO cloaca_schema_migrations VALUES (999, 'future', 0)", []).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = Store::open(&url, None, 1, Duration::ZERO, 0).err().expect("a newer schema is refused");
        assert!(error.to_string().contains("999"), "{error}");
        assert_eq!(versions(&path).last(), Some(&999));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_untouched() {
        let (path, url) = temp_url();
        std::fs::write(&path, b"these are not the pages you are looking for").unwrap();
        let error = Store::open(&url, None, 1, Duration::ZERO, 0).err().expect("not a database");
        assert!(error.to_string().contains("not a SQLite database"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"these are not the pages you are looking for");
        let _ = std::fs::remove_file(&path);
    }
}
