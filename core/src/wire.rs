//! How timestamps are written in JSON: RFC 3339 with `+00:00` (`to_rfc3339`), as poem-openapi
//! writes them, not chrono's serde `Z`. [`crate::engine::CustomerContext`] is written this way,
//! so its stored form is what the API sends; the server's answers use the same functions.

use chrono::{DateTime, Utc};
use serde::Serializer;

/// A timestamp as the API writes it (`to_rfc3339`: `+00:00`).
///
/// # Errors
/// Those of the serializer.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference
pub fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339())
}

/// An optional timestamp as the API writes it (`null` when absent).
///
/// # Errors
/// Those of the serializer.
#[allow(clippy::ref_option)] // serde's `serialize_with` passes a reference
pub fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
