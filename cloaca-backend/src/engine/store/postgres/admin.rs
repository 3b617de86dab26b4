//! Tenants on PostgreSQL: one schema per tenant, owned by a login role of
//! its own, created and removed by [`DatabaseAdmin`].
//!
//! DDL cannot take bound parameters, so a password reaches the server only
//! as a SCRAM-SHA-256 verifier computed here: the statement (and any server
//! log of it) never holds the password itself.

use std::sync::Mutex;

use postgres::{Client, Config, NoTls, Transaction};

use super::identifiers::{quote_identifier, validate_name};
use crate::engine::error::{Error, Result};
use crate::engine::sync::lock;
use crate::engine::time::now_ms;
use crate::engine::url::postgres::{connection_config, describe_target, with_credentials};

/// Longest password accepted (PostgreSQL itself has no useful limit).
pub(crate) const MAX_PASSWORD_CHARS: usize = 1024;

/// Characters of generated passwords.
const PASSWORD_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub(crate) const GENERATED_PASSWORD_CHARS: usize = 32;

/// Checks a password given for a tenant. The message never repeats it.
pub(crate) fn validate_password(password: &str) -> Result<()> {
    let problem = if password.is_empty() {
        "is empty"
    } else if password.contains('\0') {
        "contains a NUL character, which PostgreSQL cannot store"
    } else if password.chars().count() > MAX_PASSWORD_CHARS {
        "is longer than 1024 characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTenant(format!(
        "the password {problem}; give a non-empty string of at most {MAX_PASSWORD_CHARS} characters without NUL, or None to generate one"
    )))
}

/// `len` characters of [`PASSWORD_ALPHABET`] from the operating system's
/// random source (about 5.95 bits each).
pub(crate) fn random_password(len: usize, mut fill: impl FnMut(&mut [u8]) -> Result<()>) -> Result<String> {
    let mut out = String::with_capacity(len);
    let mut buffer = [0u8; 64];
    // 248 = 4 * 62: bytes above it are dropped so that every character is equally likely.
    let limit = (256 / PASSWORD_ALPHABET.len() * PASSWORD_ALPHABET.len()) as u8;
    while out.len() < len {
        fill(&mut buffer)?;
        for &b in buffer.iter().filter(|&&b| b < limit) {
            if out.len() == len {
                break;
            }
            out.push(PASSWORD_ALPHABET[b as usize % PASSWORD_ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

/// What `create_tenant` returns.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TenantCredentials {
    pub(crate) schema_name: String,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) connection_string: String,
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("schema_name", &self.schema_name)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Creates and removes tenants through a role allowed to create roles and schemas.
pub(crate) struct DatabaseAdmin {
    url: String,
    config: Config,
    target: String,
    client: Mutex<Option<Client>>,
}

const REGISTRY_DDL: &str = "CREATE SCHEMA IF NOT EXISTS cloaca_admin;
    CREATE TABLE IF NOT EXISTS cloaca_admin.tenants (
        schema_name TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        created_at BIGINT NOT NULL
    )";

impl DatabaseAdmin {
    /// Connects as the admin (failing fast when the server is unreachable).
    pub(crate) fn connect(url: &str) -> Result<Self> {
        let config = connection_config(url)?;
        let target = describe_target(&config);
        let admin = DatabaseAdmin { url: url.to_string(), config, target, client: Mutex::new(None) };
        admin.with_transaction("connecting", |_| Ok(()))?;
        Ok(admin)
    }

    /// `host:port/database` (never the password).
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Runs `f` in one transaction on the admin connection (reconnecting if it dropped).
    fn with_transaction<T>(&self, action: &'static str, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut guard = lock(&self.client);
        if guard.as_ref().is_none_or(Client::is_closed) {
            let client = self.config.connect(NoTls).map_err(|e| Error::Connect { target: self.target.clone(), source: e.into() })?;
            *guard = Some(client);
        }
        let client = guard.as_mut().expect("connected above");
        let mut tx = client.transaction().map_err(|e| Error::database(action, e))?;
        let value = f(&mut tx)?;
        tx.commit().map_err(|e| Error::database(action, e))?;
        Ok(value)
    }

    /// Creates the schema and its login role (owner of the schema, with
    /// CONNECT on this database and nothing else), in one transaction.
    pub(crate) fn create_tenant(&self, schema: &str, username: &str, password: Option<&str>) -> Result<TenantCredentials> {
        validate_name("schema name", schema)?;
        validate_name("username", username)?;
        let password = match password {
            Some(p) => {
                validate_password(p)?;
                p.to_string()
            }
            None => random_password(GENERATED_PASSWORD_CHARS, |buf| {
                getrandom::fill(buf).map_err(|e| Error::InvalidTenant(format!("no random source for a password: {e}")))
            })?,
        };
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The verifier is base64 and punctuation; checked so that quoting it is trivially safe.
        assert!(verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=$:-".contains(&b)), "SCRAM verifier alphabet");
        let action = "creating a tenant";
        self.with_transaction(action, |tx| {
            tx.batch_execute(REGISTRY_DDL).map_err(|e| Error::database(action, e))?;
            if exists(tx, "SELECT 1 FROM pg_roles WHERE rolname = $1", username, action)? {
                return Err(Error::InvalidTenant(format!(
                    "a role named {username:?} already exists; choose another username (nothing was created)"
                )));
            }
            if exists(tx, "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema, action)? {
                return Err(Error::InvalidTenant(format!(
                    "a schema named {schema:?} already exists; choose another schema name (nothing was created)"
                )));
            }
            let database: String =
                tx.query_one("SELECT current_database()", &[]).and_then(|r| r.try_get(0)).map_err(|e| Error::database(action, e))?;
            let (role, schema_id) = (quote_identifier(username), quote_identifier(schema));
            let ddl = format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{verifier}';
                 GRANT {role} TO CURRENT_USER;
                 CREATE SCHEMA {schema_id} AUTHORIZATION {role};
                 GRANT CONNECT ON DATABASE {} TO {role};",
                quote_identifier(&database)
            );
            tx.batch_execute(&ddl).map_err(|e| Error::database(action, e))?;
            tx.execute(
                "INSERT INTO cloaca_admin.tenants (schema_name, username, created_at) VALUES ($1, $2, $3)",
                &[&schema, &username, &now_ms()],
            )
            .map_err(|e| Error::database(action, e))?;
            Ok(())
        })?;
        Ok(TenantCredentials {
            schema_name: schema.to_string(),
            username: username.to_string(),
            connection_string: with_credentials(&self.url, username, &password)?,
            password,
        })
    }

    /// Drops a tenant's schema (with everything in it) and its role, if
    /// this admin created that pair; refuses anything else untouched.
    pub(crate) fn remove_tenant(&self, schema: &str, username: &str) -> Result<()> {
        validate_name("schema name", schema)?;
        validate_name("username", username)?;
        let action = "removing a tenant";
        self.with_transaction(action, |tx| {
            let refuse = || {
                Error::InvalidTenant(format!(
                    "schema {schema:?} with role {username:?} was not created by DatabaseAdmin.create_tenant; \
                     remove_tenant drops only tenants it created (nothing was dropped)"
                ))
            };
            if !exists(tx, "SELECT 1 FROM pg_tables WHERE schemaname = 'cloaca_admin' AND tablename = $1", "tenants", action)? {
                return Err(refuse());
            }
            let owned = tx
                .query_opt("SELECT 1 FROM cloaca_admin.tenants WHERE schema_name = $1 AND username = $2 FOR UPDATE", &[&schema, &username])
                .map_err(|e| Error::database(action, e))?;
            if owned.is_none() {
                return Err(refuse());
            }
            let (role, schema_id) = (quote_identifier(username), quote_identifier(schema));
            tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema_id} CASCADE; DROP OWNED BY {role}; DROP ROLE IF EXISTS {role};"))
                .map_err(|e| Error::database(action, e))?;
            tx.execute("DELETE FROM cloaca_admin.tenants WHERE schema_name = $1", &[&schema]).map_err(|e| Error::database(action, e))?;
            Ok(())
        })
    }
}

fn exists(tx: &mut Transaction<'_>, sql: &str, value: &str, action: &'static str) -> Result<bool> {
    tx.query_opt(sql, &[&value]).map(|row| row.is_some()).map_err(|e| Error::database(action, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_errors_never_repeat_the_password() {
        for bad in ["", "se\0cret", &"p".repeat(1025)] {
            let message = validate_password(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !message.contains(bad), "{message}");
        }
        validate_password("'; DROP ROLE postgres; --").unwrap();
        validate_password(&"é".repeat(1024)).unwrap();
    }

    #[test]
    fn generated_passwords_use_every_letter_and_digit_uniformly() {
        let mut seed = 0u8;
        let password = random_password(32, |buf| {
            for b in buf.iter_mut() {
                seed = seed.wrapping_add(1);
                *b = seed;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(password.len(), 32);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "{password}");
        // Bytes 1..=32 map to the alphabet's characters 1..=32.
        assert_eq!(password, "BCDEFGHIJKLMNOPQRSTUVWXYZabcdefg");
    }
}
