//! PostgreSQL URLs: the driver's connection settings, how a server is named
//! in messages, and a URL with a tenant's credentials in place of the admin's.

use std::str::FromStr;
use std::time::Duration;

use postgres::Config;

use crate::engine::error::{Error, Result};

/// The connection settings of `url`, failing fast (10 s) when the server
/// cannot be reached unless the URL sets its own connect_timeout.
pub(crate) fn connection_config(url: &str) -> Result<Config> {
    let mut config = Config::from_str(url).map_err(|e| Error::InvalidUrl {
        url: url.to_string(),
        reason: format!("{e}; use postgresql://user:password@host:port/database"),
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

/// `host:port/database` of a connection configuration (never the password).
pub(crate) fn describe_target(config: &Config) -> String {
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

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` (postgres:// or postgresql://) with its user and password
/// replaced; host, port, database and the other query parameters stay as
/// they are. A `user` or `password` query parameter is dropped: it would
/// override the tenant's, and must not hand the admin's password on.
pub(crate) fn with_credentials(url: &str, user: &str, password: &str) -> Result<String> {
    let invalid = || Error::InvalidUrl { url: url.to_string(), reason: "expected postgresql://user:password@host:port/database".into() };
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let kept: Vec<&str> =
        query.split('&').filter(|pair| !pair.is_empty() && !matches!(pair.split('=').next(), Some("user" | "password"))).collect();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    Ok(format!("{scheme}://{}:{}@{host}{path}{query}", percent_encode(user), percent_encode(password)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_replace_user_and_password_and_keep_the_rest() {
        assert_eq!(
            with_credentials("postgresql://admin:secret@db.example:5433/app?sslmode=require", "tenant_a", "p@ss:w/rd é").unwrap(),
            "postgresql://tenant_a:p%40ss%3Aw%2Frd%20%C3%A9@db.example:5433/app?sslmode=require"
        );
        assert_eq!(with_credentials("postgres://localhost/app", "t", "x").unwrap(), "postgres://t:x@localhost/app");
        assert_eq!(with_credentials("postgres://a@[::1]:5432", "t", "x").unwrap(), "postgres://t:x@[::1]:5432");
        assert_eq!(
            with_credentials("postgresql://db/app?user=admin&sslmode=require&password=secret", "t", "x").unwrap(),
            "postgresql://t:x@db/app?sslmode=require",
            "the admin's credentials in the query are not handed on"
        );
        assert_eq!(with_credentials("postgresql://db/app?password=secret", "t", "x").unwrap(), "postgresql://t:x@db/app");
    }

    #[test]
    fn targets_name_host_port_and_database_only() {
        let config = connection_config("postgresql://u:secret@db.example:5433/app").unwrap();
        assert_eq!(describe_target(&config), "db.example:5433/app");
    }
}
