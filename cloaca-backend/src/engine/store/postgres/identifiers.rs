//! Schema and role names: checked against [`NAME_RULE`] before any SQL is
//! sent, and quoted as identifiers where they are used.

use crate::engine::error::{Error, Result};

/// The accepted form of schema and role names, for messages.
pub(crate) const NAME_RULE: &str = "1 to 63 characters: a lowercase letter or underscore, then lowercase letters, digits or \
     underscores ([a-z_][a-z0-9_]{0,62}), not starting with pg_ and not information_schema";

/// Checks a schema or role name; `what` names it in the error ("schema name").
pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let well_formed =
        matches!(chars.next(), Some('a'..='z' | '_')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_')) && name.len() <= 63;
    let problem = if !well_formed {
        "is not accepted"
    } else if name.starts_with("pg_") || name == "information_schema" {
        "is reserved by PostgreSQL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTenant(format!("{what} {name:?} {problem}: use {NAME_RULE}")))
}

/// A name as a quoted SQL identifier (validated names need no escaping,
/// but quoting keeps that true whatever the rule becomes).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_and_hostile_ones_are_refused_with_the_value() {
        for good in ["a", "_", "tenant_a", "t1", &"a".repeat(63)] {
            validate_name("schema name", good).unwrap();
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "Tenant",
            "tenant-name",
            "1abc",
            "a b",
            "x;DROP SCHEMA public CASCADE",
            "\"; DROP SCHEMA public CASCADE; --",
            "ünï",
            &long,
            "pg_x",
            "information_schema",
        ] {
            let message = validate_name("schema name", bad).unwrap_err().to_string();
            assert!(message.starts_with(&format!("schema name {bad:?}")), "{message}");
        }
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
