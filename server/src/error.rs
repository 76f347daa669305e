//! The one error body of the API: `{"error": {"code", "message", "field", "request_id"}}`.
//!
//! Handlers return [`ApiError`]; everything else that fails before a handler runs (no route,
//! missing auth, a bad path parameter) is a plain `poem::Error`, which the request middleware
//! turns into the same body with [`render`]. Codes are stable and documented in the OpenAPI
//! description; messages are for people and never echo a submitted value.

use std::borrow::Cow;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Object, types::Type};
use sticky_core::EngineError;

use crate::middleware::current_request_id;

/// The error body.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename_all = "snake_case")]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Object, serde::Serialize)]
#[oai(rename_all = "snake_case")]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_value`, `unknown_field`, `customer_not_found`.
    pub code: String,
    /// Human explanation.
    pub message: String,
    /// The offending field (dotted path), when there is one.
    #[oai(nullable)]
    pub field: Option<String>,
    /// The request's id (also in the `x-request-id` response header); quote it to support.
    pub request_id: String,
}

/// An error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    field: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    retry_after: Option<u64>,
}

impl ApiError {
    /// 429 `too_many_attempts`: too many keys to verify from one client address.
    pub fn too_many_attempts(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many API keys to verify from this address; wait and retry with a valid key",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }

    /// Any error.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` of `seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 422 `invalid_value` on a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message).with_field(field)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid API key: send `Authorization: Bearer <api key>`",
        )
    }

    /// 403 `insufficient_scope`.
    pub fn insufficient_scope(scope: sticky_core::keys::Scope) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key lacks the `{}` scope", scope.as_str()),
        )
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The offending field, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
                request_id: current_request_id(),
            },
        }
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let mut r = poem::web::Json(self.body())
            .with_status(self.status)
            .into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(v) = poem::http::HeaderValue::from_str(&seconds.to_string())
        {
            r.headers_mut().insert("retry-after", v);
        }
        r
    }
}

impl From<sticky_core::FieldError> for ApiError {
    fn from(e: sticky_core::FieldError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(f) => f.into(),
            EngineError::NotFound { code, message } => {
                Self::new(StatusCode::NOT_FOUND, code, message)
            }
            EngineError::Conflict { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            EngineError::Database(db) => database_error(&db),
            EngineError::Corrupt(detail) => {
                tracing::error!(error = %detail, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error",
                )
            }
            EngineError::Storage { full: true, detail } => {
                tracing::error!(error = %detail, "the disk is full: requests that write are refused");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the server's disk is full; nothing of this request was stored: retry later",
                )
            }
            EngineError::Storage {
                full: false,
                detail,
            } => {
                tracing::error!(error = %detail, "storage error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "internal error",
                )
            }
        }
    }
}

/// The one place database errors become answers: a unique-constraint violation is a conflict
/// (two requests raced to create the same thing), an unreachable database is 503, anything
/// else is an opaque 500 with the cause in the log.
fn database_error(db: &sea_orm::DbErr) -> ApiError {
    use sea_orm::{DbErr, SqlErr};
    if let Some(SqlErr::UniqueConstraintViolation(_)) = db.sql_err() {
        return ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "a concurrent request created the same thing; retry",
        );
    }
    tracing::error!(error = %db, "database error");
    match db {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database did not answer; retry shortly",
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        ),
    }
}

const DOCUMENTED: &[(u16, &str)] = &[
    (
        400,
        "Malformed JSON (`malformed_json`), a wrong type (`invalid_type`), an unknown field (`unknown_field`) or a missing one (`missing_field`).",
    ),
    (401, "Missing or invalid API key (`unauthorized`)."),
    (
        403,
        "The API key lacks the scope this operation needs (`insufficient_scope`).",
    ),
    (
        404,
        "The named call, customer, intent or key does not exist for this tenant.",
    ),
    (
        409,
        "Conflicts with stored data: a name taken, a concurrent creation (`conflict`), or an `intent_status` for a call without an intent (`no_intent`).",
    ),
    (
        429,
        "Over the plan's rate limit (`rate_limited`), the month's calls used up (`quota_exceeded`), or too many unknown keys from one address (`too_many_attempts`); `Retry-After` says when to retry.",
    ),
    (413, "The body is over 64 KiB (`payload_too_large`)."),
    (
        422,
        "A value is well-formed but not acceptable (`invalid_value`), with the field named.",
    ),
];

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: DOCUMENTED
                .iter()
                .map(|(status, description)| MetaResponse {
                    description,
                    status: Some(*status),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/json; charset=utf-8",
                        schema: ErrorBody::schema_ref(),
                    }],
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        ErrorBody::register(registry);
    }
}

/// Renders any error as our body. Errors of ours keep their code; poem's own get one from
/// their status. A 5xx that is not ours is logged with its cause and answered opaquely.
pub fn render(err: poem::Error) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    // A path or query parameter poem-openapi could not read, or whose declared constraint
    // failed: named, with the codes a body field would get.
    if let Some(p) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        let api = if p.reason.contains("expects an input value") {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_field",
                format!("`{}` is required", p.name),
            )
        } else if p.reason.contains("verification failed")
            // A number past what its type holds (`limit=18446744073709551616`) is past the
            // maximum too, not of another type.
            || p.reason.contains("too large")
            || p.reason.contains("too small")
        {
            ApiError::invalid(
                p.name,
                format!(
                    "`{}` is outside what the API document allows for it",
                    p.name
                ),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_type",
                format!("`{}` has the wrong type", p.name),
            )
        };
        return poem::error::ResponseError::as_response(&api.with_field(p.name));
    }
    // A path whose percent-encoding does not decode (`/v1/calls/%FF`): the router cannot
    // tell which parameter it was.
    if err.is::<poem::error::ParsePathError>() {
        return poem::error::ResponseError::as_response(&ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_value",
            "a path parameter is not valid percent-encoded UTF-8",
        ));
    }
    let status = err.status();
    let api = match status {
        StatusCode::UNAUTHORIZED => ApiError::unauthorized(),
        StatusCode::NOT_FOUND => ApiError::new(status, "not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            status,
            "method_not_allowed",
            "this route does not accept that method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "request bodies are limited to 64 KiB",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send `Content-Type: application/json`",
        ),
        s if s.is_client_error() => ApiError::new(s, "bad_request", err.to_string()),
        s => {
            tracing::error!(error = %err, status = s.as_u16(), "unhandled error");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        }
    };
    poem::error::ResponseError::as_response(&api)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnectionTrait;

    /// What a database out of disk space answers: `503 storage_full`.
    async fn answer_to(db: &sea_orm::DatabaseConnection, statement: &str) -> ApiError {
        let failed = db.execute_unprepared(statement).await.unwrap_err();
        ApiError::from(EngineError::from(failed))
    }

    #[tokio::test]
    async fn a_full_sqlite_database_is_503_storage_full() {
        let db = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        // A database allowed two pages: the second row of a page's size fills it.
        let full = answer_to(
            &db,
            "PRAGMA max_page_count = 2; CREATE TABLE t (b BLOB); \
             INSERT INTO t VALUES (zeroblob(4096)); INSERT INTO t VALUES (zeroblob(4096));",
        )
        .await;
        assert_eq!(
            (full.status, full.code.as_ref()),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_full")
        );
        let other = answer_to(&db, "SELECT * FROM no_such_table").await;
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    #[ignore = "PostgreSQL: STICKY_TEST_POSTGRES_URL=postgres://... cargo test -p sticky-calls-server -- --ignored"]
    async fn a_full_postgresql_disk_is_503_storage_full() {
        let Ok(url) = std::env::var("STICKY_TEST_POSTGRES_URL") else {
            eprintln!("skipped: STICKY_TEST_POSTGRES_URL is not set");
            return;
        };
        let db = sea_orm::Database::connect(url).await.unwrap();
        // PostgreSQL's own error for a full disk (SQLSTATE 53100, `disk_full`), raised on
        // purpose: the disk here has room.
        let full = answer_to(
            &db,
            "DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; \
             END $$",
        )
        .await;
        assert_eq!(
            (full.status, full.code.as_ref()),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_full")
        );
        let other = answer_to(
            &db,
            "DO $$ BEGIN RAISE EXCEPTION 'no' USING ERRCODE = 'internal_error'; END $$",
        )
        .await;
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_full_disk_is_503_storage_full_and_another_storage_failure_an_opaque_500() {
        let full = ApiError::from(EngineError::Storage {
            full: true,
            detail: "open calls journal: append: No space left on device".into(),
        });
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.code, "storage_full");
        assert!(
            !full.message.contains("journal"),
            "no internals in the answer"
        );
        let other = ApiError::from(EngineError::Storage {
            full: false,
            detail: "open calls journal: create: Permission denied".into(),
        });
        assert_eq!(other.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(other.code, "internal_error");
    }
}
