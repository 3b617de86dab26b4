//! Which database backend this build of the engine stores its state in.

use std::fmt;

/// A database backend; one per cargo feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite: durable workflows with no server.
    Sqlite,
    /// PostgreSQL: many runner processes on many machines share one database.
    Postgres,
}

impl Backend {
    /// The backend selected by this build's cargo feature.
    #[cfg(feature = "sqlite")]
    pub const CURRENT: Backend = Backend::Sqlite;
    /// The backend selected by this build's cargo feature.
    #[cfg(all(feature = "postgres", not(feature = "sqlite")))]
    pub const CURRENT: Backend = Backend::Postgres;

    /// The backend's name as Python sees it (`cloaca.get_backend()`).
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_backend_matches_the_enabled_feature() {
        let expected = if cfg!(feature = "sqlite") { "sqlite" } else { "postgres" };
        assert_eq!(Backend::CURRENT.name(), expected);
        assert_eq!(Backend::CURRENT.to_string(), expected);
    }
}
