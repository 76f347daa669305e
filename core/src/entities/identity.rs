//! A link from an identity (a caller number in E.164, or an external id `name:value`) to a
//! customer, with how many ended calls made it and when it was last seen.
use sea_orm::entity::prelude::*;

/// `kind` of a caller-number identity.
pub const KIND_ANI: &str = "ani";
/// `kind` of an external-id identity.
pub const KIND_EXTERNAL: &str = "external_id";

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "identities")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub customer_id: i64,
    pub kind: String,
    pub value: String,
    pub call_count: i64,
    pub first_seen_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
