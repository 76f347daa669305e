//! The call-start read model: each customer's answer (row and context) stored as one document,
//! so a start reads one row instead of walking the customer, variables, intents and calls
//! tables. The document is derived data: every write that changes a customer's context
//! rewrites it in the same transaction.
//!
//! The key is the customer's id. On SQLite it is declared `INTEGER PRIMARY KEY` (the row id
//! itself: one B-tree), which the schema builder cannot express, hence the SQL per backend.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

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
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE customer_contexts")
            .await
            .map(|_| ())
    }
}
