//! Identifier newtypes. Each has a private field and one constructor that parses, so a value
//! that exists is valid; the error says what is wrong without echoing the value (it may be
//! personal data).

use std::fmt;

/// Why a value was rejected; the HTTP layer adds the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn check_len(value: &str, min: usize, max: usize, what: &str) -> Result<(), InvalidValue> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(InvalidValue(format!(
            "{what} must be {min} to {max} characters long (got {len})"
        )));
    }
    Ok(())
}

fn check_no_control(value: &str, what: &str) -> Result<(), InvalidValue> {
    if value.chars().any(char::is_control) {
        return Err(InvalidValue(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

fn check_token(value: &str, extra: &str, what: &str) -> Result<(), InvalidValue> {
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        return Err(InvalidValue(format!(
            "{what} may contain only letters, digits and `{extra}` (found {bad:?})"
        )));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The platform's own identifier of a call: 1–128 characters, no control characters.
    CallId
);
string_newtype!(
    /// A customer's reference, chosen by the client (a CRM id) or generated (`cust_...`):
    /// 1–128 characters of letters, digits and `_-.:@+`.
    CustomerRef
);
string_newtype!(
    /// The platform a call came from (`generic`, `twilio` ...): 1–32 of `a-z0-9_-`.
    Platform
);
string_newtype!(
    /// A saved variable's name: 1–64 characters of letters, digits and `_-.`.
    VariableName
);
string_newtype!(
    /// An intent's name (`refund_request`): 1–128 characters of letters, digits and `_-.:`.
    IntentName
);

impl CallId {
    /// # Errors
    /// When the id is empty, longer than 128 characters or holds control characters.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        check_len(value, 1, 128, "call_id")?;
        check_no_control(value, "call_id")?;
        Ok(Self(value.to_owned()))
    }
}

impl CustomerRef {
    /// # Errors
    /// When the reference is empty, too long or holds other characters than allowed.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        check_len(value, 1, 128, "customer_ref")?;
        check_token(value, "_-.:@+", "customer_ref")?;
        Ok(Self(value.to_owned()))
    }

    /// A fresh reference for a provisional customer: `cust_` and 16 random base-32 characters.
    pub fn generate() -> Self {
        Self(format!("cust_{}", crate::random_token(16)))
    }
}

impl Platform {
    /// # Errors
    /// When the slug is empty, too long or not `a-z0-9_-`.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        check_len(value, 1, 32, "platform")?;
        if value.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(InvalidValue("platform must be lower case".into()));
        }
        check_token(value, "_-", "platform")?;
        Ok(Self(value.to_owned()))
    }

    /// The platform of calls made straight through the REST API.
    pub fn generic() -> Self {
        Self("generic".into())
    }
}

impl VariableName {
    /// # Errors
    /// When the name is empty, longer than 64 characters or not letters, digits and `_-.`.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        check_len(value, 1, 64, "variable name")?;
        check_token(value, "_-.", "variable name")?;
        Ok(Self(value.to_owned()))
    }
}

impl IntentName {
    /// # Errors
    /// When the name is empty, longer than 128 characters or not letters, digits and `_-.:`.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        check_len(value, 1, 128, "intent")?;
        check_token(value, "_-.:", "intent")?;
        Ok(Self(value.to_owned()))
    }
}

/// An identifier from another system (a CRM id, an account number), namespaced by its kind:
/// `crm_id:crm_12345`. Name: 1–64 of letters, digits and `_-.`; value: 1–256 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalId {
    name: String,
    value: String,
}

impl ExternalId {
    /// # Errors
    /// When the name or the value is out of bounds.
    pub fn new(name: &str, value: &str) -> Result<Self, InvalidValue> {
        check_len(name, 1, 64, "external id name")?;
        check_token(name, "_-.", "external id name")?;
        check_len(value, 1, 256, "external id value")?;
        check_no_control(value, "external id value")?;
        Ok(Self {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    /// Parses the `name:value` form used in query strings and storage.
    ///
    /// # Errors
    /// When there is no `:` or either side is out of bounds.
    pub fn parse_pair(pair: &str) -> Result<Self, InvalidValue> {
        let (name, value) = pair
            .split_once(':')
            .ok_or_else(|| InvalidValue("external id must be written name:value".into()))?;
        Self::new(name, value)
    }

    /// The kind of id (`crm_id`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id itself.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// `name:value`, the stored form.
    pub fn pair(&self) -> String {
        format!("{}:{}", self.name, self.value)
    }
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalId({}:<redacted>)", self.name)
    }
}

/// Whether an intent is still to be dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    /// Still to be dealt with: listed in the customer's context.
    Open,
    /// Dealt with: leaves the open list.
    Resolved,
}

impl IntentStatus {
    /// # Errors
    /// When the value is neither `open` nor `resolved`.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        match value {
            "open" => Ok(Self::Open),
            "resolved" => Ok(Self::Resolved),
            _ => Err(InvalidValue(
                "intent_status must be `open` or `resolved`".into(),
            )),
        }
    }

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }
}

/// When a promised callback is due: an RFC 3339 time with its offset
/// (`2026-12-05T15:00:00Z`, `2026-12-05T16:00:00+01:00`), kept in UTC.
///
/// # Errors
/// When the value is not such a time.
pub fn parse_due_at(value: &str) -> Result<chrono::DateTime<chrono::Utc>, InvalidValue> {
    use chrono::Datelike;
    let t = chrono::DateTime::parse_from_rfc3339(value.trim()).map_err(|_| {
        InvalidValue(
            "intent_due_at must be an RFC 3339 time with its offset, such as \
             `2026-12-05T15:00:00Z`"
                .into(),
        )
    })?;
    // Stored as both databases can keep it: to the microsecond (PostgreSQL's precision), a
    // leap second (`23:59:60`) as the second after it (PostgreSQL reads it so; SQLite would
    // keep the text of a time that never was).
    let nanos = t.timestamp_subsec_nanos();
    let seconds = t.timestamp() + i64::from(nanos / 1_000_000_000);
    chrono::DateTime::from_timestamp(seconds, nanos % 1_000_000_000 / 1_000 * 1_000)
        // Years that RFC 3339 can write back (an offset can push 9999 into 10000).
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or_else(|| {
            InvalidValue("intent_due_at must fall between the years 1 and 9999 in UTC".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_time_must_stay_within_years_1_to_9999_in_utc() {
        assert!(parse_due_at("2026-12-05T15:00:00Z").is_ok());
        assert!(parse_due_at("9999-12-31T23:59:59-23:59").is_err());
        assert!(parse_due_at("0001-01-01T00:00:00+01:00").is_err());
        assert!(parse_due_at("tomorrow").is_err());
    }

    /// What both databases store alike: microseconds, and no leap second.
    #[test]
    fn a_due_time_is_kept_to_the_microsecond_and_a_leap_second_is_the_next() {
        let at = |s: &str| parse_due_at(s).unwrap().to_rfc3339();
        assert_eq!(
            at("2026-12-05T15:00:00.123456789Z"),
            "2026-12-05T15:00:00.123456+00:00"
        );
        assert_eq!(at("2026-12-31T23:59:60Z"), "2027-01-01T00:00:00+00:00");
        assert_eq!(
            at("2026-12-31T23:59:60.5+00:00"),
            "2027-01-01T00:00:00.500+00:00"
        );
        assert_eq!(at("2026-12-05T16:00:00+01:00"), "2026-12-05T15:00:00+00:00");
    }

    #[test]
    fn a_call_id_must_be_1_to_128_characters() {
        assert!(CallId::parse("").is_err());
        assert!(CallId::parse(&"a".repeat(129)).is_err());
        assert!(CallId::parse(&"a".repeat(128)).is_ok());
        assert!(CallId::parse("projects/p/sessions/abc").is_ok());
        assert!(CallId::parse("bad\nid").is_err());
    }

    #[test]
    fn a_customer_ref_allows_crm_style_tokens_only() {
        assert!(CustomerRef::parse("cust_abc123").is_ok());
        assert!(CustomerRef::parse("john.doe+1@example.com").is_ok());
        assert!(CustomerRef::parse("has space").is_err());
        assert!(CustomerRef::parse("a/b").is_err());
    }

    #[test]
    fn generated_customer_refs_are_unique_and_valid() {
        let a = CustomerRef::generate();
        let b = CustomerRef::generate();
        assert_ne!(a, b);
        assert!(CustomerRef::parse(a.as_str()).is_ok());
        assert!(a.as_str().starts_with("cust_"));
    }

    #[test]
    fn an_external_id_pair_splits_on_the_first_colon() {
        let id = ExternalId::parse_pair("crm_id:abc:def").unwrap();
        assert_eq!(id.name(), "crm_id");
        assert_eq!(id.value(), "abc:def");
        assert!(ExternalId::parse_pair("no-colon").is_err());
        assert!(ExternalId::parse_pair(":value").is_err());
        assert!(ExternalId::parse_pair("name:").is_err());
    }

    #[test]
    fn platform_slugs_are_lower_case_tokens() {
        assert!(Platform::parse("amazon-connect").is_ok());
        assert!(Platform::parse("Twilio").is_err());
        assert!(Platform::parse("").is_err());
    }

    #[test]
    fn intent_status_is_open_or_resolved() {
        assert_eq!(IntentStatus::parse("open").unwrap(), IntentStatus::Open);
        assert_eq!(
            IntentStatus::parse("resolved").unwrap(),
            IntentStatus::Resolved
        );
        assert!(IntentStatus::parse("closed").is_err());
    }
}
