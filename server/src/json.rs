//! `StrictJson<T>`: a JSON request body parsed by serde (not by poem-openapi's lenient parser),
//! so wrong types are rejected instead of coerced (`{"call_id": 5}` is an error), unknown
//! fields are rejected where the type says `deny_unknown_fields`, and every error names the
//! field by its path. The OpenAPI schema still comes from the type's poem-openapi `Object`.
//! Bodies are read with a hard limit ([`MAX_BODY_BYTES`]) whatever `Content-Length` says.
//!
//! `DirectJson<T>`: a JSON answer written by serde straight from `T`, with `T`'s OpenAPI
//! schema, for the answers sent on every call.

use poem::http::StatusCode;
use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// How the API writes timestamps (`+00:00`), for serde's `serialize_with`.
pub use sticky_core::wire::{rfc3339, rfc3339_opt};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A strictly parsed JSON body.
pub struct StrictJson<T>(pub T);

/// An enum of the API read from its JSON string alone (serde's derive would also take the
/// map form `{"variant": null}`), for `#[serde(try_from = "String")]`. The error does not
/// repeat the value.
///
/// # Errors
/// A string that is none of the enum's values.
pub fn enum_value<T: poem_openapi::types::ParseFromJSON>(s: String) -> Result<T, String> {
    T::parse_from_json(Some(serde_json::Value::String(s)))
        .map_err(|_| "is not one of the allowed values".to_owned())
}

/// Implements `TryFrom<String>` through [`enum_value`] for enums of the API.
#[macro_export]
macro_rules! string_enum {
    ($($t:ty),* $(,)?) => {
        $(
            impl TryFrom<String> for $t {
                type Error = String;
                fn try_from(s: String) -> Result<Self, String> {
                    $crate::json::enum_value(s)
                }
            }
        )*
    };
}

/// For an optional nested object (`#[serde(default, deserialize_with = "...")]`): `null` or
/// an object, never the array form serde's derive would also read a struct from.
///
/// # Errors
/// Anything but `null` or an object.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use std::marker::PhantomData;
    struct Outer<T>(PhantomData<T>);
    struct Inner<T>(PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Inner<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Outer<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(Inner(PhantomData)).map(Some)
        }
    }
    d.deserialize_option(Outer(PhantomData))
}

/// Classifies a serde error into a stable code and the field it concerns.
pub fn classify(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    // Never echo the submitted value: it may be a phone number or a name.
    let message = sticky_core::connector::without_values(&err.to_string());
    // serde's messages end with " at line L column C": keep them, they help find the spot.
    let field = if path.is_empty() || path == "." {
        None
    } else {
        Some(path.to_owned())
    };
    let (status, code, field) = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            (StatusCode::BAD_REQUEST, "malformed_json", None)
        }
        // A key given twice: the request is ambiguous, whichever value would win.
        Category::Data if message.starts_with("duplicate field") => (
            StatusCode::BAD_REQUEST,
            "malformed_json",
            named(field.as_deref(), &message),
        ),
        // The path already ends with the unknown key.
        Category::Data if message.starts_with("unknown field") => {
            let full = field.or_else(|| between_backticks(&message).map(str::to_owned));
            (StatusCode::BAD_REQUEST, "unknown_field", full)
        }
        Category::Data if message.starts_with("missing field") => (
            StatusCode::BAD_REQUEST,
            "missing_field",
            named(field.as_deref(), &message),
        ),
        // serde reads a struct from an array too; for a JSON API that is a wrong type.
        Category::Data
            if message.starts_with("invalid type")
                || (message.starts_with("invalid length")
                    && message.contains("expected struct")) =>
        {
            (StatusCode::BAD_REQUEST, "invalid_type", field)
        }
        Category::Data => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", field),
    };
    let err = ApiError::new(status, code, message);
    match field {
        Some(f) => err.with_field(f),
        None => err,
    }
}

/// The field a message names (between backticks) inside the object at `path`.
fn named(path: Option<&str>, message: &str) -> Option<String> {
    match (path, between_backticks(message)) {
        (Some(p), Some(n)) => Some(format!("{p}.{n}")),
        (None, Some(n)) => Some(n.to_owned()),
        (p, None) => p.map(str::to_owned),
    }
}

fn between_backticks(s: &str) -> Option<&str> {
    let start = s.find('`')? + 1;
    let len = s[start..].find('`')?;
    Some(&s[start..start + len])
}

/// Reads a request body, refusing more than [`MAX_BODY_BYTES`] whatever `Content-Length` says.
///
/// # Errors
/// 413 `payload_too_large`, or 400 `malformed_body` when the body cannot be read.
pub async fn read_body(body: poem::Body) -> Result<bytes::Bytes, ApiError> {
    read_body_limit(body, MAX_BODY_BYTES).await
}

/// Reads a request body, refusing more than `limit` bytes whatever `Content-Length` says.
///
/// # Errors
/// 413 `payload_too_large` over the limit; 400 when the body cannot be read.
pub async fn read_body_limit(body: poem::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    body.into_bytes_limit(limit).await.map_err(|e| match e {
        poem::error::ReadBodyError::PayloadTooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {} KiB", limit / 1024),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            "the request body could not be read",
        ),
    })
}

/// Parses a JSON document into `T`, naming the failing field.
///
/// # Errors
/// An [`ApiError`] with a stable code.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the request body is empty; send a JSON object",
        ));
    }
    // Every body of this API is an object; serde would also read a struct from an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "the request body is not valid JSON",
            ));
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the request body must be a JSON object",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        classify(&path, e.inner())
    })?;
    // One JSON document: anything but whitespace after it is malformed, not ignored.
    de.end().map_err(|e| classify("", &e))?;
    Ok(value)
}

impl<'a, T: Type + DeserializeOwned + Send> ApiExtractor<'a> for StrictJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: <T as Type>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        _request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = read_body(body.take()?).await?;
        Ok(Self(parse(&bytes)?))
    }
}

/// A JSON answer written by serde straight from `T`, described in the OpenAPI document by
/// `T`'s schema, like poem-openapi's `Json<T>`. `Json<T>` first builds a `serde_json::Value`
/// tree (every string copied, every object a map) and then writes that: for the call-start
/// answer, sent on every call, the tree was ~8% of a start's CPU. `T`'s `Serialize` must
/// write exactly what its `ToJSON` writes (timestamps through [`rfc3339`]); each type sent
/// this way has a test comparing the two byte for byte.
pub struct DirectJson<T>(pub T);

impl<T: Type> Payload for DirectJson<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + Serialize> IntoResponse for DirectJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder()
                .content_type(<Self as Payload>::CONTENT_TYPE)
                .body(body),
            // Only a map with non-string keys or a failing `Serialize` gets here: a bug.
            Err(e) => {
                tracing::error!(error = %e, "an answer could not be written as JSON");
                poem::error::ResponseError::as_response(&ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the answer could not be written",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        call_id: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        ani: Option<String>,
    }

    fn code_and_field(body: &str) -> (String, Option<String>) {
        let e = parse::<Probe>(body.as_bytes()).unwrap_err();
        (e.code().to_owned(), e.field().map(str::to_owned))
    }

    #[test]
    fn error_messages_do_not_repeat_submitted_values() {
        let e = parse::<Probe>(br#"{"call_id": 14155551234}"#).unwrap_err();
        assert!(!e.to_string().contains("14155551234"), "{e}");
        assert!(e.to_string().contains("expected a string"), "{e}");
    }

    #[test]
    fn each_kind_of_bad_json_gets_its_code_and_field() {
        let cases = [
            ("{", "malformed_json", None),
            ("", "malformed_json", None),
            ("[1]", "invalid_type", None),
            ("[]", "invalid_type", None),
            (
                r#"{"call_id": "a", "inner": []}"#,
                "invalid_type",
                Some("inner"),
            ),
            (r#"{"call_id": 5}"#, "invalid_type", Some("call_id")),
            (r#"{"call_id": "a", "x": 1}"#, "unknown_field", Some("x")),
            (r#"{"call_id": "a"}xyz"#, "malformed_json", None),
            (r#"{"call_id": "a"}}"#, "malformed_json", None),
            (
                r#"{"call_id": "a"} {"call_id": "b"}"#,
                "malformed_json",
                None,
            ),
            (
                r#"{"call_id": "a", "call_id": "b"}"#,
                "malformed_json",
                Some("call_id"),
            ),
            (
                r#"{"call_id": "a", "inner": {"ani": "1", "ani": "2"}}"#,
                "malformed_json",
                Some("inner.ani"),
            ),
            (r#"{}"#, "missing_field", Some("call_id")),
            (
                r#"{"call_id": "a", "inner": {"ani": 1}}"#,
                "invalid_type",
                Some("inner.ani"),
            ),
            (
                r#"{"call_id": "a", "inner": {"zz": 1}}"#,
                "unknown_field",
                Some("inner.zz"),
            ),
        ];
        for (body, code, field) in cases {
            let (got_code, got_field) = code_and_field(body);
            assert_eq!(got_code, code, "body {body:?}");
            assert_eq!(got_field.as_deref(), field, "body {body:?}");
        }
    }
}
