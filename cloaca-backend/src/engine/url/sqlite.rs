//! `sqlite://` URLs: where the file is and how it is opened.

use std::path::PathBuf;

/// Where a SQLite database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SqliteLocation {
    Memory,
    File(PathBuf),
}

/// How a SQLite file is opened (`mode=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// The names of SQLite's own open modes (SQLITE_OPEN_READONLY, ...).
#[allow(clippy::enum_variant_names)]
pub(crate) enum SqliteMode {
    ReadOnly,
    ReadWrite,
    ReadWriteCreate,
}

/// A parsed `sqlite://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SqliteUrl {
    pub(crate) location: SqliteLocation,
    pub(crate) mode: SqliteMode,
    pub(crate) journal_mode: String,
    pub(crate) busy_timeout_ms: u32,
    pub(crate) synchronous: String,
}

pub(super) fn parse(rest: &str) -> std::result::Result<SqliteUrl, String> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let location = match path {
        "" | "/" => return Err("it names no database file".into()),
        ":memory:" | "/:memory:" => SqliteLocation::Memory,
        p => SqliteLocation::File(PathBuf::from(p)),
    };
    let mut parsed = SqliteUrl {
        location,
        mode: SqliteMode::ReadWriteCreate,
        journal_mode: "WAL".into(),
        busy_timeout_ms: 5000,
        synchronous: "NORMAL".into(),
    };
    for pair in query.into_iter().flat_map(|q| q.split('&')).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("the query option {pair:?} has no value (write key=value)"))?;
        match key {
            "mode" => {
                parsed.mode = match value {
                    // A file: URI's in-memory database (SQLite's own mode name).
                    "memory" => {
                        parsed.location = SqliteLocation::Memory;
                        SqliteMode::ReadWriteCreate
                    }
                    "ro" => SqliteMode::ReadOnly,
                    "rw" => SqliteMode::ReadWrite,
                    "rwc" => SqliteMode::ReadWriteCreate,
                    _ => return Err(format!("mode={value:?} is not accepted: use ro, rw, rwc or memory")),
                }
            }
            "_journal_mode" => {
                let upper = value.to_ascii_uppercase();
                if !["WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF"].contains(&upper.as_str()) {
                    return Err(format!("_journal_mode={value:?} is not accepted: use WAL, DELETE, TRUNCATE, PERSIST, MEMORY or OFF"));
                }
                parsed.journal_mode = upper;
            }
            "_busy_timeout" => {
                parsed.busy_timeout_ms =
                    value.parse().map_err(|_| format!("_busy_timeout={value:?} is not accepted: use milliseconds, e.g. 5000"))?
            }
            "_synchronous" => {
                let upper = value.to_ascii_uppercase();
                if !["OFF", "NORMAL", "FULL", "EXTRA"].contains(&upper.as_str()) {
                    return Err(format!("_synchronous={value:?} is not accepted: use OFF, NORMAL, FULL or EXTRA"));
                }
                parsed.synchronous = upper;
            }
            other => {
                return Err(format!(
                    "the query option {other:?} is unknown: accepted options are mode, _journal_mode, \
                     _busy_timeout and _synchronous"
                ))
            }
        }
    }
    Ok(parsed)
}
