//! The audit trail of a tenant's administrative actions: API keys made and revoked, erasures
//! with their counts, settings changed. What it records is chosen to hold no personal data:
//! the ids of keys, platform slugs, counts and the names of settings — never a customer
//! reference, a number or a value.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value;

use crate::engine::TenantId;
use crate::entities::audit_event;
use crate::error::EngineError;

/// An action recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What (`api_key_created`, `api_key_revoked`, `customer_erased`, `number_erased`,
    /// `caller_forgotten`, `settings_changed`, `connector_settings_changed`).
    pub action: String,
    /// The key id or platform acted on.
    pub subject: Option<String>,
    /// Counts and setting names.
    pub details: Value,
}

/// Records an action.
///
/// # Errors
/// Database failures.
pub async fn record(
    db: &DatabaseConnection,
    tenant: TenantId,
    action: &str,
    subject: Option<&str>,
    details: &Value,
) -> Result<(), EngineError> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        tenant_id: Set(tenant.0),
        at: Set(crate::now()),
        action: Set(action.to_owned()),
        subject: Set(subject.map(str::to_owned)),
        details: Set(details.to_string()),
        ..Default::default()
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// The tenant's latest actions, newest first.
///
/// # Errors
/// Database failures.
pub async fn list(
    db: &DatabaseConnection,
    tenant: TenantId,
    limit: u64,
) -> Result<Vec<AuditEvent>, EngineError> {
    let rows = audit_event::Entity::find()
        .filter(audit_event::Column::TenantId.eq(tenant.0))
        .order_by_desc(audit_event::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditEvent {
                at: r.at,
                action: r.action,
                subject: r.subject,
                details: serde_json::from_str(&r.details)?,
            })
        })
        .collect()
}
