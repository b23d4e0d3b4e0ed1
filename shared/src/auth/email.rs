//! The `Email` newtype: the only way to hold an address is to parse one.

use crate::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// As the user typed it (trimmed).
    pub display: String,
    /// Lower-cased, for uniqueness and lookup.
    pub normalized: String,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Email, ApiError> {
        let s = raw.trim();
        let bad = || {
            ApiError::bad_request(
                "invalid_email",
                "Enter a valid email address, like name@example.com.",
            )
        };
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(bad());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(bad());
        }
        Ok(Email {
            display: s.to_owned(),
            normalized: s.to_lowercase(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn valid_addresses_parse_and_normalize() {
        let e = Email::parse("  Ada.Lovelace+x@Example.COM ").expect("valid");
        assert_eq!(e.normalized, "ada.lovelace+x@example.com");
        assert_eq!(e.display, "Ada.Lovelace+x@Example.COM");
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a@x..com",
            "a@@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
