//! The connection layer the store's SQL is written against, once for both
//! backends.
//!
//! Statements are written in SQLite's spelling (`?N` parameters,
//! `json_each(?N)` for a JSON array of strings, `/*LOCK*/` where a claim
//! locks its row); [`postgres_dialect`] rewrites those three things for
//! PostgreSQL. A backend adapts its connection to [`Conn`]; the helpers on
//! `dyn Conn` ([`query_opt`](trait.Conn.html#method.query_opt) and friends)
//! read results the way rusqlite's and rust-postgres' own helpers do.

use super::records::Channel;
use crate::engine::error::{Error, Result};

/// A statement parameter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Param<'a> {
    Int(i64),
    Text(&'a str),
    NullableText(Option<&'a str>),
    NullableInt(Option<i64>),
}

/// Read access to one result row, by column index.
pub(crate) trait Row {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
}

/// A connection (or open transaction) of one backend.
pub(crate) trait Conn {
    fn execute(&mut self, sql: &'static str, params: &[Param]) -> Result<u64>;
    fn query(&mut self, sql: &'static str, params: &[Param], each: &mut dyn FnMut(&dyn Row) -> Result<()>) -> Result<()>;
    /// Runs several statements (a migration).
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Sends a notification on commit; a no-op where nobody can listen.
    fn notify(&mut self, channel: Channel, payload: &str) -> Result<()>;
    /// The name `channel` is notified under, where someone can listen: for
    /// a statement that notifies itself (`pg_notify`) instead of a round
    /// trip of its own.
    fn channel_name(&self, channel: Channel) -> Option<&str>;
    /// Serialises migrations between processes (SQLite's write lock already does).
    fn lock_for_migration(&mut self) -> Result<()>;
    /// True where a transaction's row locks make others wait (PostgreSQL;
    /// SQLite locks the whole file): one that holds an execution's row
    /// then must not write another execution's, or two can deadlock.
    fn locks_rows(&self) -> bool;
    /// True where each statement is a round trip to a server (PostgreSQL),
    /// so that merging statements pays; SQLite runs them in process (and
    /// has no data-modifying WITH).
    fn is_remote(&self) -> bool;
    /// The server's own commit durability (a `synchronous_commit` level),
    /// for a statement that commits by itself and sets it for itself: the
    /// pooled PostgreSQL connections otherwise commit without waiting for
    /// the flush. None on SQLite, whose statements are not merged so.
    fn commit_level(&self) -> Option<&str>;
}

impl dyn Conn + '_ {
    /// The first row read by `read`, if the statement returned any.
    pub(crate) fn query_opt<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        mut read: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut found = None;
        self.query(sql, params, &mut |row| {
            if found.is_none() {
                found = Some(read(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The one row of a statement that always returns one (an aggregate).
    pub(crate) fn query_one<T>(&mut self, sql: &'static str, params: &[Param], read: impl FnMut(&dyn Row) -> Result<T>) -> Result<T> {
        self.query_opt(sql, params, read)?.ok_or_else(|| Error::corrupt("reading state", "a statement that returns one row returned none"))
    }

    /// Every row, each read by `read`.
    pub(crate) fn query_all<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        mut read: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        self.query(sql, params, &mut |row| {
            rows.push(read(row)?);
            Ok(())
        })?;
        Ok(rows)
    }
}

/// Rewrites a statement from SQLite's spelling into PostgreSQL's.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn postgres_dialect(sql: &str) -> String {
    let sql = sql.replace("/*LOCK*/", "FOR UPDATE SKIP LOCKED");
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql.as_str();
    while let Some(at) = rest.find(['?', 'j']) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("json_each(?") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            out.push_str(&format!("json_array_elements_text(CAST(${} AS TEXT)::json)", &after[..digits]));
            rest = &after[digits + 1..]; // past the closing parenthesis
        } else if let Some(after) = rest.strip_prefix('?') {
            out.push('$');
            rest = after;
        } else {
            out.push('j');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A JSON array of strings, the list parameter of `json_each(?N)`.
pub(crate) fn json_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_string()).collect();
    serde_json::Value::from(items).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_dialect_rewrites_parameters_lists_and_locks() {
        assert_eq!(postgres_dialect("SELECT ?1, ?12 FROM t"), "SELECT $1, $12 FROM t");
        assert_eq!(
            postgres_dialect("x IN (SELECT value FROM json_each(?4)) AND y = ?2"),
            "x IN (SELECT value FROM json_array_elements_text(CAST($4 AS TEXT)::json)) AND y = $2"
        );
        let claim = "WHERE id = (SELECT id FROM t WHERE a = ?1 LIMIT 1 /*LOCK*/)";
        assert!(postgres_dialect(claim).contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"));
        assert!(!postgres_dialect(claim).contains('?'));
        assert_eq!(postgres_dialect("jump ?1"), "jump $1");
        assert_eq!(json_list(["a", "b\""]), r#"["a","b\""]"#);
    }
}
