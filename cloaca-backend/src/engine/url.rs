//! Database URLs: which backend a URL is for, and the options it carries.
//!
//! A URL for the other backend is recognised and refused with a message that
//! says which backend is installed, rather than failing somewhere deeper.

use std::path::PathBuf;

use super::backend::Backend;
use super::error::{EngineError, Result};

/// The forms the installed backend accepts, for error messages.
pub fn accepted_forms(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "sqlite:///absolute/path.db, sqlite://relative/path.db or sqlite://:memory:, optionally with \
             ?mode=ro|rw|rwc&_journal_mode=WAL&_busy_timeout=MS&_synchronous=OFF|NORMAL|FULL|EXTRA"
        }
        Backend::Postgres => "postgresql://user:password@host:port/database (or postgres://...)",
    }
}

/// Where a SQLite database lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SqliteLocation {
    Memory,
    File(PathBuf),
}

/// How a SQLite file is opened (`mode=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteMode {
    ReadOnly,
    ReadWrite,
    ReadWriteCreate,
}

/// A parsed `sqlite://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteUrl {
    pub location: SqliteLocation,
    pub mode: SqliteMode,
    pub journal_mode: String,
    pub busy_timeout_ms: u32,
    pub synchronous: String,
}

/// The database a runner should open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(SqliteUrl),
    /// A PostgreSQL URL, checked for shape here; the driver parses the rest.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `url` for the backend this build has.
    pub fn parse(url: &str) -> Result<Self> {
        Self::parse_for(url, Backend::CURRENT)
    }

    /// Parses `url` for `backend` (separate so both are unit-tested in one build).
    pub fn parse_for(url: &str, backend: Backend) -> Result<Self> {
        let invalid = |reason: String| EngineError::InvalidUrl { url: url.to_string(), reason };
        let scheme_end = url.find("://").ok_or_else(|| {
            invalid(format!("it has no scheme; the {backend} backend is installed and accepts {}", accepted_forms(backend)))
        })?;
        let scheme = &url[..scheme_end];
        let url_backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "postgres" | "postgresql" => Backend::Postgres,
            other => {
                return Err(invalid(format!(
                    "the scheme {other:?} is not a database cloaca supports; the {backend} backend is \
                     installed and accepts {}",
                    accepted_forms(backend)
                )))
            }
        };
        if url_backend != backend {
            return Err(invalid(format!(
                "it is a {url_backend} URL, but the {backend} backend is installed, which accepts {}; \
                 install cloaca[{url_backend}] to use {url_backend}",
                accepted_forms(backend)
            )));
        }
        let rest = &url[scheme_end + 3..];
        let with_forms =
            |reason: String| invalid(format!("{reason}; the {backend} backend is installed and accepts {}", accepted_forms(backend)));
        match backend {
            Backend::Sqlite => parse_sqlite(rest).map(DatabaseUrl::Sqlite).map_err(with_forms),
            Backend::Postgres => {
                if rest.is_empty() || rest == "/" {
                    return Err(with_forms("it names no host or database".into()));
                }
                Ok(DatabaseUrl::Postgres(url.to_string()))
            }
        }
    }
}

fn parse_sqlite(rest: &str) -> std::result::Result<SqliteUrl, String> {
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
                    "ro" => SqliteMode::ReadOnly,
                    "rw" => SqliteMode::ReadWrite,
                    "rwc" => SqliteMode::ReadWriteCreate,
                    _ => return Err(format!("mode={value:?} is not accepted: use ro, rw or rwc")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(url: &str) -> SqliteUrl {
        match DatabaseUrl::parse_for(url, Backend::Sqlite).unwrap() {
            DatabaseUrl::Sqlite(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sqlite_forms() {
        assert_eq!(sqlite("sqlite:///tmp/x.db").location, SqliteLocation::File("/tmp/x.db".into()));
        assert_eq!(sqlite("sqlite://rel/x.db").location, SqliteLocation::File("rel/x.db".into()));
        assert_eq!(sqlite("sqlite://:memory:").location, SqliteLocation::Memory);
        let opts = sqlite("sqlite:///x.db?mode=rw&_journal_mode=delete&_busy_timeout=10&_synchronous=full");
        assert_eq!(
            (opts.mode, opts.journal_mode.as_str(), opts.busy_timeout_ms, opts.synchronous.as_str()),
            (SqliteMode::ReadWrite, "DELETE", 10, "FULL")
        );
        assert_eq!(sqlite("sqlite:///x.db").synchronous, "NORMAL");
    }

    #[test]
    fn bad_urls_name_the_url_and_what_is_accepted() {
        for (url, backend, needle) in [
            ("postgresql://u@h/db", Backend::Sqlite, "sqlite backend is installed"),
            ("sqlite:///x.db", Backend::Postgres, "postgres backend is installed"),
            ("mysql://h/db", Backend::Sqlite, "\"mysql\""),
            ("not a url", Backend::Postgres, "no scheme"),
            ("sqlite://", Backend::Sqlite, "no database file"),
            ("sqlite:///x.db?colour=red", Backend::Sqlite, "\"colour\""),
            ("sqlite:///x.db?_synchronous=sometimes", Backend::Sqlite, "\"sometimes\""),
            ("sqlite:///x.db?mode", Backend::Sqlite, "no value"),
            ("postgresql://", Backend::Postgres, "no host"),
        ] {
            let message = DatabaseUrl::parse_for(url, backend).unwrap_err().to_string();
            assert!(message.contains(&format!("{url:?}")), "{message}");
            assert!(message.contains(needle), "{url}: {message}");
        }
    }
}
