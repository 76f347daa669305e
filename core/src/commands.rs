//! The engine's inputs: a call start and a call end, already validated. The REST API and every
//! connector build these from their own wire formats; the limits live here so every entry
//! point enforces the same ones.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{
    Attestation, CallId, CustomerRef, ExternalId, IntentName, IntentStatus, Platform, VariableName,
};
use crate::error::FieldError;

/// At most this many variables in one request.
pub const MAX_VARIABLES: usize = 100;
/// A variable's value, as JSON text, may be at most this many bytes.
pub const MAX_VARIABLE_BYTES: usize = 4 * 1024;
/// A summary may be at most this many characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them).
pub const MAX_SUMMARY_CHARS: usize = 8 * 1024;
/// At most this many external ids on one call.
pub const MAX_EXTERNAL_IDS: usize = 20;
/// A dialled number as given may be at most this many characters.
pub const MAX_DNIS_CHARS: usize = 64;
/// A caller number as given may be at most this many characters.
pub const MAX_ANI_CHARS: usize = 256;

/// What the platform knows about the caller, as given (numbers not yet interpreted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdentityHints {
    /// Caller number in any form; `None` when not given.
    pub ani: Option<String>,
    /// Dialled number in any form.
    pub dnis: Option<String>,
    /// Ids from other systems.
    pub external_ids: Vec<ExternalId>,
    /// The carrier's STIR/SHAKEN verdict on the caller number, when the platform passes it.
    pub attestation: Option<Attestation>,
}

impl IdentityHints {
    /// These hints with the carrier's verdict on the number.
    #[must_use]
    pub fn with_attestation(mut self, attestation: Option<Attestation>) -> Self {
        self.attestation = attestation;
        self
    }

    /// Validates raw hints; `prefix` is the field path of the hints object.
    ///
    /// # Errors
    /// A [`FieldError`] naming the first bad field.
    pub fn parse(
        prefix: &str,
        ani: Option<String>,
        dnis: Option<String>,
        external_ids: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, FieldError> {
        if let Some(a) = &ani
            && a.chars().count() > MAX_ANI_CHARS
        {
            return Err(FieldError::new(
                format!("{prefix}.ani"),
                format!("must be at most {MAX_ANI_CHARS} characters"),
            ));
        }
        if let Some(d) = &dnis
            && (d.chars().count() > MAX_DNIS_CHARS || d.chars().any(char::is_control))
        {
            return Err(FieldError::new(
                format!("{prefix}.dnis"),
                format!("must be at most {MAX_DNIS_CHARS} characters, without control characters"),
            ));
        }
        let mut ids = Vec::new();
        for (name, value) in external_ids {
            let id = ExternalId::new(&name, &value)
                .map_err(|e| FieldError::new(format!("{prefix}.external_ids.{name}"), e.0))?;
            ids.push(id);
        }
        if ids.len() > MAX_EXTERNAL_IDS {
            return Err(FieldError::new(
                format!("{prefix}.external_ids"),
                format!("at most {MAX_EXTERNAL_IDS} external ids"),
            ));
        }
        ids.sort();
        Ok(Self {
            ani,
            dnis,
            external_ids: ids,
            attestation: None,
        })
    }
}

/// Variable changes: a value to save, or `None` to remove the key; a saved value may expire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariableChanges(
    BTreeMap<VariableName, Option<Value>>,
    BTreeMap<VariableName, DateTime<Utc>>,
);

/// The longest time to live a variable may be given: ten years, in seconds.
pub const MAX_VARIABLE_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl VariableChanges {
    /// Validates names, sizes and count.
    ///
    /// # Errors
    /// A [`FieldError`] naming the first bad variable.
    pub fn parse(raw: impl IntoIterator<Item = (String, Value)>) -> Result<Self, FieldError> {
        let mut out = BTreeMap::new();
        for (name, value) in raw {
            let parsed = VariableName::parse(&name)
                .map_err(|e| FieldError::new(format!("variables.{name}"), e.0))?;
            let value = match value {
                Value::Null => None,
                v => {
                    let bytes = serde_json::to_string(&v).map_or(usize::MAX, |s| s.len());
                    if bytes > MAX_VARIABLE_BYTES {
                        return Err(FieldError::new(
                            format!("variables.{name}"),
                            format!("value must be at most {MAX_VARIABLE_BYTES} bytes as JSON"),
                        ));
                    }
                    Some(v)
                }
            };
            out.insert(parsed, value);
            if out.len() > MAX_VARIABLES {
                return Err(FieldError::new(
                    "variables",
                    format!("at most {MAX_VARIABLES} variables per request"),
                ));
            }
        }
        Ok(Self(out, BTreeMap::new()))
    }

    /// Gives variables a time to live, in seconds from `now`; `field` names the map in errors
    /// (`variable_ttl_seconds`). A variable these changes save expires with its new value; one
    /// they do not mention keeps its saved value and is given the new expiry
    /// ([`Self::retimed`]); one they remove is removed.
    ///
    /// # Errors
    /// A [`FieldError`] naming the first entry with a bad name, or whose time is not a whole
    /// number of seconds from 1 to [`MAX_VARIABLE_TTL_SECONDS`].
    pub fn with_ttls(
        mut self,
        field: &str,
        ttls: impl IntoIterator<Item = (String, u64)>,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldError> {
        for (name, seconds) in ttls {
            let at = format!("{field}.{name}");
            let parsed = VariableName::parse(&name).map_err(|e| FieldError::new(&at, e.0))?;
            if !(1..=MAX_VARIABLE_TTL_SECONDS).contains(&seconds) {
                return Err(FieldError::new(
                    at,
                    format!(
                        "a time to live is a whole number of seconds from 1 to \
                         {MAX_VARIABLE_TTL_SECONDS}"
                    ),
                ));
            }
            let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
            self.1
                .insert(parsed, now + chrono::Duration::seconds(seconds));
        }
        Ok(self)
    }

    /// Variables given only a time to live: their saved values get these expiries.
    pub fn retimed(&self) -> impl Iterator<Item = (&VariableName, DateTime<Utc>)> {
        self.1
            .iter()
            .filter(|(name, _)| !self.0.contains_key(*name))
            .map(|(name, at)| (name, *at))
    }

    /// When the variable `name` this request saves expires (none: it is kept).
    pub fn expires_at(&self, name: &VariableName) -> Option<DateTime<Utc>> {
        self.1.get(name).copied()
    }

    /// The changes, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&VariableName, Option<&Value>)> {
        self.0.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// The value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// Whether there are no changes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks a summary's size.
///
/// # Errors
/// When it is over [`MAX_SUMMARY_CHARS`].
pub fn parse_summary(field: &str, summary: String) -> Result<String, FieldError> {
    // Counted only past the bytes that many characters could take at the least.
    if summary.len() > MAX_SUMMARY_CHARS && summary.chars().count() > MAX_SUMMARY_CHARS {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_SUMMARY_CHARS} characters"),
        ));
    }
    // Line breaks and tabs are text; other control characters (NUL above all, which
    // PostgreSQL refuses to store) are not.
    if summary
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(summary)
}

/// A call has started: who is it?
#[derive(Debug, Clone, PartialEq)]
pub struct StartCall {
    /// The platform's call id.
    pub call_id: CallId,
    /// Where the call comes from.
    pub platform: Platform,
    /// What the platform knows.
    pub hints: IdentityHints,
}

/// A call has ended (or an agent reports on it): remember what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct EndCall {
    /// The platform's call id (same as at start).
    pub call_id: CallId,
    /// Where the call comes from; used when the end is the first we hear of the call.
    pub platform: Platform,
    /// Who the caller turned out to be, when known.
    pub customer_ref: Option<CustomerRef>,
    /// What the call was about.
    pub intent: Option<IntentName>,
    /// Whether that is dealt with.
    pub intent_status: Option<IntentStatus>,
    /// When the intent is a promised callback: when it is due.
    pub intent_due_at: Option<DateTime<Utc>>,
    /// Variables to merge into the customer's.
    pub variables: VariableChanges,
    /// The call's summary; when absent, `variables.summary` (if text) is used.
    pub summary: Option<String>,
    /// Hints known at the end (merged with the start's).
    pub hints: IdentityHints,
}

impl EndCall {
    /// A platform's hang-up: the call is over, nothing more is known about it.
    pub fn hang_up(call_id: CallId, platform: Platform, hints: IdentityHints) -> Self {
        Self {
            call_id,
            platform,
            customer_ref: None,
            intent: None,
            intent_status: None,
            intent_due_at: None,
            variables: VariableChanges::default(),
            summary: None,
            hints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_variables_are_removals() {
        let v =
            VariableChanges::parse([("a".into(), json!(null)), ("b".into(), json!(1))]).unwrap();
        let items: Vec<_> = v.iter().map(|(k, v)| (k.as_str(), v.cloned())).collect();
        assert_eq!(items, [("a", None), ("b", Some(json!(1)))]);
    }

    #[test]
    fn variable_limits_name_the_field() {
        let too_big = VariableChanges::parse([("x".into(), json!("a".repeat(5000)))]);
        assert_eq!(too_big.unwrap_err().field, "variables.x");
        let bad_name = VariableChanges::parse([("no spaces".into(), json!(1))]);
        assert_eq!(bad_name.unwrap_err().field, "variables.no spaces");
        let many = VariableChanges::parse((0..101).map(|i| (format!("v{i}"), json!(i))));
        assert_eq!(many.unwrap_err().field, "variables");
        assert!(VariableChanges::parse((0..100).map(|i| (format!("v{i}"), json!(i)))).is_ok());
    }

    #[test]
    fn summaries_and_dialled_numbers_refuse_control_characters() {
        assert!(parse_summary("summary", "line one\nline two\ttab".into()).is_ok());
        assert!(parse_summary("summary", "nul\0byte".into()).is_err());
        let err = IdentityHints::parse("h", None, Some("+1800\0".into()), Vec::new()).unwrap_err();
        assert_eq!(err.field, "h.dnis");
    }

    /// Counted in characters, as the API document's `maxLength` counts them.
    #[test]
    fn summaries_are_limited_to_8192_characters() {
        assert!(parse_summary("summary", "a".repeat(8192)).is_ok());
        assert!(parse_summary("summary", "é".repeat(8192)).is_ok());
        assert!(parse_summary("summary", "🎧".repeat(8192)).is_ok());
        assert!(parse_summary("summary", "é".repeat(8193)).is_err());
        assert_eq!(
            parse_summary("summary", "a".repeat(8193))
                .unwrap_err()
                .field,
            "summary"
        );
    }

    #[test]
    fn external_ids_are_validated_with_their_path() {
        let err = IdentityHints::parse(
            "identity_hints",
            None,
            None,
            [("crm id".to_owned(), "1".to_owned())],
        )
        .unwrap_err();
        assert_eq!(err.field, "identity_hints.external_ids.crm id");
    }
}
