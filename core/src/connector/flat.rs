//! Flat key-value requests and answers, shared by the connectors whose request the platform's
//! admin builds from a template (a Genesys Cloud data action, a NICE CXone Studio snippet, a
//! Five9 web connector, a Voiceflow API step) and by those whose answer is a flat map.
//!
//! The request contract is the same everywhere: a call id key, the caller and dialled number,
//! `ext_<name>` external ids, and at the end the customer, intent, status, summary and
//! `var_<name>` variables, each platform naming them after its own variables. Keys outside a
//! contract are ignored, never refused (admins add fields); a contract key holding a number
//! where text is expected is refused with `invalid_type`, naming the key.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Rejection;
use crate::commands::{IdentityHints, VariableChanges, parse_summary};
use crate::domain::{Attestation, CallId, CustomerRef, IntentName, IntentStatus};

/// A flat request: key-value pairs from a JSON object or a form, in the order received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlatParams {
    pairs: Vec<(String, Value)>,
}

/// Whether `value` is a template placeholder the platform did not substitute: Five9's
/// `@Call.ANI@`, a Velocity reference `${input.ani}` (Genesys), a Voiceflow `{user_id}`.
/// Such a value is no data: it is read as absent.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    let inner = if let Some(rest) = v.strip_prefix("${").or_else(|| v.strip_prefix("$!{")) {
        rest.strip_suffix('}')
    } else if let Some(rest) = v.strip_prefix('@') {
        rest.strip_suffix('@')
    } else if let Some(rest) = v.strip_prefix('{') {
        rest.strip_suffix('}')
    } else {
        None
    };
    inner.is_some_and(|name| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ' '))
    })
}

impl FlatParams {
    /// From form pairs (a form body or a query string).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        }
    }

    /// From a JSON object's members.
    pub fn from_map(map: &Map<String, Value>) -> Self {
        Self {
            pairs: map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// Reads a JSON body that must be one flat object. `what` names the payload in messages
    /// (`a Genesys Cloud data action request`).
    ///
    /// # Errors
    /// `malformed_payload` when the body is not JSON, `invalid_payload` when it is not an
    /// object.
    pub fn from_json(body: &[u8], what: &str) -> Result<(Self, Map<String, Value>), Rejection> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|_| Rejection::malformed("the body is not valid JSON"))?;
        match value {
            Value::Object(map) => Ok((Self::from_map(&map), map)),
            _ => Err(Rejection::invalid_payload(format!(
                "{what} is a JSON object of keys and values"
            ))),
        }
    }

    /// Adds the pairs of `other` that this one does not have (query parameters beside a body).
    pub fn with_fallback(mut self, other: Self) -> Self {
        for (k, v) in other.pairs {
            if !self.pairs.iter().any(|(have, _)| *have == k) {
                self.pairs.push((k, v));
            }
        }
        self
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether `key` is present (with any value).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The text under `key`: `None` when absent, null, empty or an unsubstituted placeholder.
    ///
    /// # Errors
    /// `invalid_type` when the value is a number, a boolean, an array or an object.
    pub fn text(&self, key: &str) -> Result<Option<&str>, Rejection> {
        match self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                Ok((!s.is_empty() && !is_placeholder(s)).then_some(s))
            }
            Some(_) => Err(Rejection::Invalid {
                status: 400,
                code: "invalid_type",
                message: format!("`{key}` must be text (a JSON string)"),
                field: Some(key.to_owned()),
            }),
        }
    }

    /// Like [`FlatParams::text`], but a JSON integer is read as its decimal digits: for ids and
    /// numbers that a platform holds as digits and may serialise as a JSON number (a CXone
    /// `DYNAMIC` object's `.asjson()` types its members implicitly).
    ///
    /// # Errors
    /// `invalid_type` for a fraction, a boolean, an array or an object.
    pub fn digits(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
            _ => Ok(self.text(key)?.map(str::to_owned)),
        }
    }

    /// The first of `keys` that holds text.
    ///
    /// # Errors
    /// As [`FlatParams::text`], for the first key present.
    pub fn first_text<'k>(&self, keys: &[&'k str]) -> Result<Option<(&'k str, String)>, Rejection> {
        for key in keys {
            if let Some(v) = self.text(key)? {
                return Ok(Some((key, v.to_owned())));
            }
        }
        Ok(None)
    }

    /// Whether a request to a connector's bare URL is an end: its `event` key says `start`
    /// (the default) or `end`.
    ///
    /// # Errors
    /// `invalid_value` for another event.
    pub fn is_end_event(&self) -> Result<bool, Rejection> {
        match self.text("event")? {
            None | Some("start") => Ok(false),
            Some("end") => Ok(true),
            Some(_) => Err(Rejection::invalid(
                "event",
                "`event` must be `start` or `end`",
            )),
        }
    }

    /// The call id under `key`.
    ///
    /// # Errors
    /// `missing_field` when absent, `invalid_type` or `invalid_value` when unusable.
    pub fn call_id(&self, key: &str) -> Result<CallId, Rejection> {
        let raw = self.text(key)?.ok_or_else(|| Rejection::missing(key))?;
        CallId::parse(raw).map_err(|e| Rejection::invalid(key, e.0))
    }

    /// The customer reference under `key`.
    ///
    /// # Errors
    /// `invalid_type` or `invalid_value`.
    pub fn customer_ref(&self, key: &str) -> Result<Option<CustomerRef>, Rejection> {
        self.text(key)?
            .map(|v| CustomerRef::parse(v).map_err(|e| Rejection::invalid(key, e.0)))
            .transpose()
    }

    /// The intent under `key`.
    ///
    /// # Errors
    /// `invalid_type` or `invalid_value`.
    pub fn intent(&self, key: &str) -> Result<Option<IntentName>, Rejection> {
        self.text(key)?
            .map(|v| IntentName::parse(v).map_err(|e| Rejection::invalid(key, e.0)))
            .transpose()
    }

    /// The intent status under `key` (`open` or `resolved`, any case).
    ///
    /// # Errors
    /// `invalid_type` or `invalid_value`.
    pub fn intent_status(&self, key: &str) -> Result<Option<IntentStatus>, Rejection> {
        self.text(key)?
            .map(|v| {
                IntentStatus::parse(&v.to_ascii_lowercase())
                    .map_err(|e| Rejection::invalid(key, e.0))
            })
            .transpose()
    }

    /// A callback's due time under `key` (RFC 3339 with its offset), which needs an intent
    /// under `intent_key`.
    ///
    /// # Errors
    /// `invalid_type`, or `invalid_value` when the time is malformed or the intent missing.
    pub fn due_at(
        &self,
        key: &str,
        intent_key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, Rejection> {
        let Some(v) = self.text(key)? else {
            return Ok(None);
        };
        let due = crate::domain::parse_due_at(v).map_err(|e| Rejection::invalid(key, e.0))?;
        if self.text(intent_key)?.is_none() {
            return Err(Rejection::invalid(
                key,
                format!("`{key}` needs `{intent_key}`: a callback is due on an intent"),
            ));
        }
        Ok(Some(due))
    }

    /// The STIR/SHAKEN attestation under `key` (`A`, `B`, `C` or `failed`).
    ///
    /// # Errors
    /// `invalid_type` or `invalid_value`.
    pub fn attestation(&self, key: &str) -> Result<Option<Attestation>, Rejection> {
        self.text(key)?
            .map(|v| Attestation::parse(v).map_err(|e| Rejection::invalid(key, e.0)))
            .transpose()
    }

    /// The summary: the first of `keys` holding text.
    ///
    /// # Errors
    /// `invalid_type`, or `invalid_value` when too long or holding control characters.
    pub fn summary(&self, keys: &[&str]) -> Result<Option<String>, Rejection> {
        self.first_text(keys)?
            .map(|(key, v)| parse_summary(key, v).map_err(Rejection::from))
            .transpose()
    }

    /// `<prefix><name>` keys with text, as `(name, value)`: `ext_crm_id` → `crm_id`.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix(prefix)?;
                let text = match v {
                    Value::String(s) => s.trim().to_owned(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                (!name.is_empty() && !text.is_empty() && !is_placeholder(&text))
                    .then(|| (name.to_owned(), text))
            })
            .collect()
    }

    /// The variables to save: every `var_<name>` key (any JSON value; `null` removes the
    /// variable), and `renamed` keys saved under another name (`wrapupCode` → `wrapup_code`).
    /// Errors name the key as sent.
    ///
    /// # Errors
    /// `invalid_value` for a bad name, a value too large or too many variables; `invalid_type`
    /// when a renamed key is not text.
    pub fn variables(&self, renamed: &[(&str, &str)]) -> Result<VariableChanges, Rejection> {
        let mut raw: BTreeMap<String, (String, Value)> = BTreeMap::new();
        for (key, name) in renamed {
            if let Some(v) = self.text(key)? {
                raw.insert(
                    (*name).to_owned(),
                    ((*key).to_owned(), Value::String(v.into())),
                );
            }
        }
        for (k, v) in &self.pairs {
            let Some(name) = k.strip_prefix("var_") else {
                continue;
            };
            if matches!(v, Value::String(s) if s.trim().is_empty() || is_placeholder(s)) {
                continue;
            }
            raw.insert(name.to_owned(), (k.clone(), v.clone()));
        }
        let keys: BTreeMap<String, String> = raw
            .iter()
            .map(|(n, (k, _))| (n.clone(), k.clone()))
            .collect();
        VariableChanges::parse(raw.into_iter().map(|(n, (_, v))| (n, v))).map_err(|e| {
            let field = e
                .field
                .strip_prefix("variables.")
                .and_then(|n| keys.get(n).cloned())
                .unwrap_or_else(|| "var_*".to_owned());
            Rejection::invalid(field, e.message)
        })
    }
}

/// Identity hints with the platform's own field names in errors: `ani` and `dnis` are the
/// values with the keys they came from.
///
/// # Errors
/// `invalid_value` naming the key.
pub fn hints(
    ani: Option<(&str, String)>,
    dnis: Option<(&str, String)>,
    external_ids: Vec<(String, String)>,
    external_key: impl Fn(&str) -> String,
) -> Result<IdentityHints, Rejection> {
    let ani_key = ani.as_ref().map_or("ani", |(k, _)| *k).to_owned();
    let dnis_key = dnis.as_ref().map_or("dnis", |(k, _)| *k).to_owned();
    IdentityHints::parse(
        "hints",
        ani.map(|(_, v)| v),
        dnis.map(|(_, v)| v),
        external_ids,
    )
    .map_err(|e| {
        let field = match e.field.as_str() {
            "hints.ani" => ani_key.clone(),
            "hints.dnis" => dnis_key.clone(),
            other => other
                .strip_prefix("hints.external_ids.")
                .map_or_else(|| other.to_owned(), &external_key),
        };
        Rejection::invalid(field, e.message)
    })
}

/// Whether a platform's direction value means the business placed the call, so that the
/// customer is the called party: `outbound`, `outbound-api`, `OUTBOUND`, `Autodial` ...
pub fn is_outbound(direction: &str) -> bool {
    let d = direction.trim().to_ascii_lowercase();
    d.starts_with("outbound")
        || matches!(
            d.as_str(),
            "callback" | "autodial" | "preview" | "manual" | "predictive" | "progressive"
        )
}

/// A flat map of text values, for platforms that read only strings: keys reduced to letters,
/// digits, `-` and `_` (others become `_`), at most `max_key_chars` characters, and fields
/// added in order while the JSON stays within `max_bytes` (later fields are dropped). A key
/// that had to be changed never takes the place of another: when `loyalty.tier` and
/// `loyalty_tier` both exist, the second reduced one becomes `loyalty_tier_2`.
pub fn flat_string_map(
    fields: Vec<(String, String)>,
    max_bytes: usize,
    max_key_chars: usize,
) -> Value {
    let clean: std::collections::HashSet<&str> = fields
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| attribute_key(k) == *k)
        .collect();
    let mut map = Map::new();
    let mut size = 2usize;
    for (k, v) in &fields {
        let mut key = attribute_key(k);
        if key != *k {
            let base = key.clone();
            let mut n = 2;
            while clean.contains(key.as_str()) || map.contains_key(&key) {
                key = format!("{base}_{n}");
                n += 1;
            }
        }
        if key.chars().count() > max_key_chars || map.contains_key(&key) {
            continue;
        }
        // Each entry costs its JSON encoding plus a comma and a colon.
        let cost = json_len(&key) + json_len(v) + 2;
        if size + cost > max_bytes {
            continue;
        }
        size += cost;
        map.insert(key, Value::String(v.clone()));
    }
    Value::Object(map)
}

/// Checks a flat JSON object of strings within `max` bytes (a connector's `check_answer`).
///
/// # Errors
/// What is wrong.
pub fn check_flat_string_map(rendered: &super::Rendered, max: usize) -> Result<(), String> {
    if rendered.body.len() > max {
        return Err(format!("{} bytes, over {max}", rendered.body.len()));
    }
    let v: Value = serde_json::from_slice(&rendered.body).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("a flat JSON object is expected")?;
    match obj.iter().find(|(_, v)| !v.is_string()) {
        Some((k, _)) => Err(format!("`{k}` is not a string")),
        None => Ok(()),
    }
}

/// A key of letters, digits, `-` and `_`: other characters (a variable's `.`) become `_`.
pub fn attribute_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Length of a string as JSON text.
pub fn json_len(s: &str) -> usize {
    serde_json::to_string(s).map_or(usize::MAX, |t| t.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> FlatParams {
        FlatParams::from_map(v.as_object().unwrap())
    }

    #[test]
    fn unsubstituted_placeholders_are_absent() {
        for p in ["@Call.ANI@", "${input.ani}", "$!{input.ani}", "{user_id}"] {
            assert!(is_placeholder(p), "{p}");
        }
        for v in ["+14155550142", "a@b.example", "{\"a\":1}", "@", "{}", "${}"] {
            assert!(!is_placeholder(v), "{v}");
        }
        let p = FlatParams::from_pairs([("ANI".into(), "@Call.ANI@".into())]);
        assert_eq!(p.text("ANI").unwrap(), None);
    }

    #[test]
    fn a_number_where_text_is_expected_names_the_key() {
        let p = params(json!({"conversationId": 5, "other": [1]}));
        match p.text("conversationId").unwrap_err() {
            Rejection::Invalid { code, field, .. } => {
                assert_eq!(code, "invalid_type");
                assert_eq!(field.as_deref(), Some("conversationId"));
            }
            other => panic!("{other:?}"),
        }
        // Keys outside the contract are never read, so never refused.
        assert_eq!(p.text("absent").unwrap(), None);
    }

    #[test]
    fn a_callback_time_is_rfc3339_and_needs_an_intent() {
        let p = params(json!({"intent": "callback", "intentDueAt": "2026-12-05T16:00:00+01:00"}));
        assert_eq!(
            p.due_at("intentDueAt", "intent")
                .unwrap()
                .map(|t| t.to_rfc3339()),
            Some("2026-12-05T15:00:00+00:00".to_owned())
        );
        // A template the platform left unrendered is no time at all.
        let p = params(json!({"intent": "callback", "intentDueAt": "${input.dueAt}"}));
        assert_eq!(p.due_at("intentDueAt", "intent").unwrap(), None);
        for bad in [
            json!({"intent": "callback", "intentDueAt": "tomorrow at 3"}),
            json!({"intentDueAt": "2026-12-05T15:00:00Z"}),
        ] {
            match params(bad).due_at("intentDueAt", "intent").unwrap_err() {
                Rejection::Invalid { code, field, .. } => {
                    assert_eq!(code, "invalid_value");
                    assert_eq!(field.as_deref(), Some("intentDueAt"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn empty_values_are_absent_and_the_call_id_is_required() {
        let p = params(json!({"contactId": "  ", "ani": ""}));
        assert_eq!(p.text("ani").unwrap(), None);
        assert!(matches!(
            p.call_id("contactId"),
            Err(Rejection::Invalid {
                code: "missing_field",
                ..
            })
        ));
    }

    #[test]
    fn variables_come_from_var_keys_and_renamed_keys_with_their_key_in_errors() {
        let p =
            params(json!({"var_tier": "gold", "var_n": 3, "wrapupCode": "Sale", "var_gone": null}));
        let v = p.variables(&[("wrapupCode", "wrapup_code")]).unwrap();
        assert_eq!(v.get("tier"), Some(&json!("gold")));
        assert_eq!(v.get("n"), Some(&json!(3)));
        assert_eq!(v.get("wrapup_code"), Some(&json!("Sale")));
        assert_eq!(v.iter().count(), 4, "null is a removal");
        let bad = params(json!({"var_bad name": "x"}));
        match bad.variables(&[]).unwrap_err() {
            Rejection::Invalid { field, .. } => assert_eq!(field.as_deref(), Some("var_bad name")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn intent_status_is_read_in_any_case() {
        let p = params(json!({"s": "Resolved"}));
        assert_eq!(p.intent_status("s").unwrap(), Some(IntentStatus::Resolved));
        assert!(params(json!({"s": "done"})).intent_status("s").is_err());
    }

    #[test]
    fn outbound_directions_are_recognised() {
        for d in [
            "outbound",
            "OUTBOUND",
            "outbound-api",
            "outbound-dial",
            "Autodial",
            "Preview",
            "CALLBACK",
        ] {
            assert!(is_outbound(d), "{d}");
        }
        for d in ["inbound", "INBOUND", "", "transfer"] {
            assert!(!is_outbound(d), "{d}");
        }
    }

    #[test]
    fn a_flat_map_never_lets_two_keys_collide_and_fits_its_limit() {
        let map = flat_string_map(
            vec![
                ("a.b".into(), "first".into()),
                ("a_b".into(), "second".into()),
                ("a b".into(), "third".into()),
                ("big".into(), "x".repeat(100)),
                ("small".into(), "y".into()),
            ],
            80,
            127,
        );
        assert_eq!(
            map,
            json!({"a_b_2": "first", "a_b": "second", "a_b_3": "third", "small": "y"})
        );
    }

    #[test]
    fn hints_errors_name_the_platform_key() {
        let err = hints(Some(("ANI", "1".repeat(300))), None, Vec::new(), |n| {
            format!("ext_{n}")
        })
        .unwrap_err();
        assert!(matches!(err, Rejection::Invalid { field: Some(f), .. } if f == "ANI"));
        let err = hints(None, None, vec![("bad name".into(), "1".into())], |n| {
            format!("ext_{n}")
        })
        .unwrap_err();
        assert!(matches!(err, Rejection::Invalid { field: Some(f), .. } if f == "ext_bad name"));
    }
}
