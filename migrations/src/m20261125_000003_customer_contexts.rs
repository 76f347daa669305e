//! The call-start read model: each customer's answer (row and context) stored as one document,
//! so a start reads one row instead of walking the customer, variables, intents and calls
//! tables; and an identity index that covers what scoring reads (no second look-up in the
//! table). The document is derived data: every write that changes a customer's context
//! rewrites it in the same transaction.
//!
//! The key is the customer's id. On SQLite it is declared `INTEGER PRIMARY KEY` (the row id
//! itself: one B-tree), which the schema builder cannot express, hence the SQL per backend.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    TenantId,
    Kind,
    Value,
    CustomerId,
    CallCount,
    LastSeenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let key = match manager.get_database_backend() {
            DbBackend::Sqlite => "INTEGER",
            _ => "BIGINT",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "CREATE TABLE customer_contexts (\
                   customer_id {key} NOT NULL PRIMARY KEY \
                     REFERENCES customers (id) ON DELETE CASCADE, \
                   tenant_id BIGINT NOT NULL, \
                   format INTEGER NOT NULL, \
                   body TEXT NOT NULL)"
            ))
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_identities_lookup_covering")
                    .table(Identities::Table)
                    .col(Identities::TenantId)
                    .col(Identities::Kind)
                    .col(Identities::Value)
                    .col(Identities::CustomerId)
                    .col(Identities::CallCount)
                    .col(Identities::LastSeenAt)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("ix_identities_lookup")
                    .table(Identities::Table)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("ix_identities_lookup")
                    .table(Identities::Table)
                    .col(Identities::TenantId)
                    .col(Identities::Kind)
                    .col(Identities::Value)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("ix_identities_lookup_covering")
                    .table(Identities::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE customer_contexts")
            .await
            .map(|_| ())
    }
}
