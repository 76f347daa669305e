//! Errors of the engine. A lookup that finds nobody is not an error (it is a low-confidence
//! [`crate::scoring::Resolution`]); these are what a caller must handle differently.

use sea_orm::DbErr;

/// A client-supplied value that was rejected, with the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Dotted path of the field (`variables.order_id`).
    pub field: String,
    /// What is wrong; never repeats the value.
    pub message: String,
}

impl FieldError {
    /// Builds one.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A client value that is well-formed but not acceptable.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The named thing does not exist for this tenant. `what` is a stable code
    /// (`customer_not_found`).
    #[error("{message}")]
    NotFound {
        /// Stable machine-readable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// The request conflicts with existing data (a tenant name taken).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// Human message.
        message: String,
    },
    /// The database failed; not the client's fault.
    #[error("database error")]
    Database(DbErr),
    /// Stored data could not be read back (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The server's own storage refused a write: `full` when the disk (or the quota) is full,
    /// which the operator must fix; nothing of the request was stored.
    #[error("{}: {detail}", if *.full { "the disk is full" } else { "storage failed" })]
    Storage {
        /// The disk or the quota is full.
        full: bool,
        /// What was being written, and the system's error.
        detail: String,
    },
}

impl From<DbErr> for EngineError {
    /// A database out of disk space (PostgreSQL's `disk_full`, SQLSTATE 53100; SQLite's
    /// `SQLITE_FULL` through sqlx) is [`EngineError::Storage`], like a full disk under the
    /// server's own files: the operator must make room, and the client may try again later.
    fn from(e: DbErr) -> Self {
        if let Some(code) = sqlstate(&e)
            && matches!(code.as_str(), "53100" | "13")
        {
            return Self::Storage {
                full: true,
                detail: format!("the database could not extend a file (code {code})"),
            };
        }
        Self::Database(e)
    }
}

/// The database's own error code of a failed statement: a SQLSTATE on PostgreSQL, the
/// (extended) result code on SQLite.
fn sqlstate(e: &DbErr) -> Option<String> {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))
    | DbErr::Conn(RuntimeErr::SqlxError(e))) = e
    else {
        return None;
    };
    match e.as_ref() {
        sea_orm::sqlx::Error::Database(d) => d.code().map(std::borrow::Cow::into_owned),
        _ => None,
    }
}

impl EngineError {
    /// A failed write or read of the server's own files (`what` names it).
    #[must_use]
    pub fn storage(what: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        Self::Storage {
            full: matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded),
            detail: format!("{what}: {e}"),
        }
    }
}

impl EngineError {
    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }
}

impl From<serde_json::Error> for EngineError {
    fn from(e: serde_json::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_full_disk_or_quota_is_told_apart_from_other_storage_failures() {
        for kind in [ErrorKind::StorageFull, ErrorKind::QuotaExceeded] {
            let e = EngineError::storage("journal: append", &Error::from(kind));
            assert!(matches!(e, EngineError::Storage { full: true, .. }));
            assert!(
                e.to_string()
                    .starts_with("the disk is full: journal: append"),
                "{e}"
            );
        }
        let e = EngineError::storage("journal: create", &Error::from(ErrorKind::PermissionDenied));
        assert!(matches!(e, EngineError::Storage { full: false, .. }));
        assert!(e.to_string().starts_with("storage failed: "), "{e}");
    }
}
