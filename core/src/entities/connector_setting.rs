//! A tenant's encrypted secret for one platform.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "connector_settings")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant_id: i64,
    pub platform: String,
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
