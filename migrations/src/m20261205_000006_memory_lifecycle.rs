//! Memory lifecycle: an intent may carry the time a promised callback is due, and a variable
//! the time it expires.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Intents {
    Table,
    DueAt,
}

#[derive(DeriveIden)]
enum Variables {
    Table,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Intents::Table)
                    .add_column(timestamp_with_time_zone_null(Intents::DueAt))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Variables::Table)
                    .add_column(timestamp_with_time_zone_null(Variables::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        // The sweep looks for expired variables. Partial: the rows that never expire (nearly
        // all) stay out of it, so saving them costs no index entry.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_variables_expires_at ON variables (expires_at) \
                 WHERE expires_at IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX idx_variables_expires_at")
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Variables::Table)
                    .drop_column(Variables::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Intents::Table)
                    .drop_column(Intents::DueAt)
                    .to_owned(),
            )
            .await
    }
}
