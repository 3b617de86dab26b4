//! Database URLs: which backend a URL is for, and the options it carries.
//!
//! A URL for the other backend is recognised and refused with a message that
//! says which backend is installed, rather than failing somewhere deeper.
//! [`sqlite`] parses SQLite's options; [`postgres`] turns a PostgreSQL URL
//! into the driver's settings and back (tenant credentials); [`redact`]
//! hides a password wherever a URL is shown.

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
mod sqlite;

pub(crate) use sqlite::SqliteUrl;
#[cfg(any(feature = "sqlite", test))]
pub(crate) use sqlite::{SqliteLocation, SqliteMode};

use super::backend::Backend;
use super::error::{Error, Result};

/// The forms the installed backend accepts, for error messages.
pub(crate) fn accepted_forms(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "sqlite:///absolute/path.db, sqlite://relative/path.db or sqlite://:memory:, optionally with \
             ?mode=ro|rw|rwc&_journal_mode=WAL&_busy_timeout=MS&_synchronous=OFF|NORMAL|FULL|EXTRA; \
             also :memory:, a bare path (starting with /, ./ or ../, or ending in .db, .sqlite or .sqlite3) \
             and file: URIs"
        }
        Backend::Postgres => "postgresql://user:password@host:port/database (or postgres://...)",
    }
}

/// The database a runner should open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DatabaseUrl {
    Sqlite(SqliteUrl),
    /// A PostgreSQL URL, checked for shape here; the driver parses the rest.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `url` for the backend this build has.
    pub(crate) fn parse(url: &str) -> Result<Self> {
        Self::parse_for(url, Backend::CURRENT)
    }

    /// Parses `url` for `backend` (separate so both are unit-tested in one build).
    pub(crate) fn parse_for(url: &str, backend: Backend) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl { url: url.to_string(), reason };
        if let Some(rest) = sqlite_without_scheme(url) {
            if backend != Backend::Sqlite {
                return Err(invalid(format!(
                    "it names a SQLite database, but the {backend} backend is installed, which accepts {}; \
                     install cloaca[sqlite] to use sqlite",
                    accepted_forms(backend)
                )));
            }
            return sqlite::parse(rest).map(DatabaseUrl::Sqlite).map_err(|reason| {
                invalid(format!("{reason}; the {backend} backend is installed and accepts {}", accepted_forms(backend)))
            });
        }
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
            Backend::Sqlite => sqlite::parse(rest).map(DatabaseUrl::Sqlite).map_err(with_forms),
            Backend::Postgres => {
                if rest.is_empty() || rest == "/" {
                    return Err(with_forms("it names no host or database".into()));
                }
                Ok(DatabaseUrl::Postgres(url.to_string()))
            }
        }
    }
}

/// The SQLite forms that have no `sqlite://` scheme, as what would follow
/// `sqlite://`: `:memory:`, `file:` URIs, and bare paths that start with
/// `/`, `./` or `../` or end in `.db`, `.sqlite` or `.sqlite3`.
fn sqlite_without_scheme(url: &str) -> Option<&str> {
    if url == ":memory:" {
        return Some(url);
    }
    if let Some(uri) = url.strip_prefix("file:") {
        // file:///abs.db names /abs.db; file:rel.db and file::memory: as written.
        return Some(uri.strip_prefix("//").unwrap_or(uri));
    }
    if url.contains("://") {
        return None;
    }
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    let bare = url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../")
        || [".db", ".sqlite", ".sqlite3"].iter().any(|ending| path.ends_with(ending));
    bare.then_some(url)
}

/// The URL without its password, for display.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
/// A database for one engine test (here, on the ground floor, so that the
/// store's tests and the runner's can both use it): a new SQLite file, or the harness's PostgreSQL database.
pub(crate) fn test_database_url() -> String {
    #[cfg(feature = "sqlite")]
    {
        let path = std::env::temp_dir().join(format!("cloaca-engine-test-{}.db", uuid::Uuid::new_v4()));
        format!("sqlite://{}", path.display())
    }
    #[cfg(feature = "postgres")]
    {
        std::env::var("CLOACA_TEST_DATABASE_URL").expect(
            "CLOACA_TEST_DATABASE_URL is not set: run the postgres unit tests with `angreal cloaca test --backend postgres`, \
             which starts a throw-away PostgreSQL server",
        )
    }
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
    fn sqlite_forms_without_the_scheme() {
        assert_eq!(sqlite(":memory:").location, SqliteLocation::Memory);
        assert_eq!(sqlite("/tmp/x.db").location, SqliteLocation::File("/tmp/x.db".into()));
        assert_eq!(sqlite("./x").location, SqliteLocation::File("./x".into()));
        assert_eq!(sqlite("../data/x").location, SqliteLocation::File("../data/x".into()));
        assert_eq!(sqlite("x.sqlite3").location, SqliteLocation::File("x.sqlite3".into()));
        assert_eq!(sqlite("dir/x.sqlite").location, SqliteLocation::File("dir/x.sqlite".into()));
        assert_eq!(sqlite("file:///tmp/x.db").location, SqliteLocation::File("/tmp/x.db".into()));
        assert_eq!(sqlite("file:rel.db").location, SqliteLocation::File("rel.db".into()));
        assert_eq!(sqlite("file::memory:").location, SqliteLocation::Memory);
        assert_eq!(sqlite("file:x.db?mode=memory").location, SqliteLocation::Memory);
        assert_eq!(sqlite("/tmp/x.db?mode=ro").mode, SqliteMode::ReadOnly);
        for url in [":memory:", "/tmp/x.db", "x.db", "file:x.db"] {
            let message = DatabaseUrl::parse_for(url, Backend::Postgres).unwrap_err().to_string();
            assert!(message.contains("postgres backend is installed"), "{message}");
        }
        assert!(DatabaseUrl::parse_for("x", Backend::Sqlite).unwrap_err().to_string().contains("no scheme"));
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

    #[test]
    fn passwords_are_hidden_when_a_url_is_shown() {
        assert_eq!(redact("postgresql://u:secret@h:5432/db"), "postgresql://u:***@h:5432/db");
        assert_eq!(redact("postgresql://u@h/db"), "postgresql://u@h/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
