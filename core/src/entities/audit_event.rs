//! One administrative action of a tenant (see `crate::audit`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub at: DateTimeUtc,
    /// `api_key_created`, `api_key_revoked`, `customer_erased` ...
    pub action: String,
    /// The key id or platform acted on; never personal data.
    pub subject: Option<String>,
    /// JSON: counts and setting names.
    pub details: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
