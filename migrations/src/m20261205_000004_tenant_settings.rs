//! Per-tenant settings of memory: the variables returned only to a caller recognised with high
//! confidence, and how long calls are kept.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TenantSettings {
    Table,
    TenantId,
    SensitiveVariables,
    RetentionDays,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TenantSettings::Table)
                    .col(big_integer(TenantSettings::TenantId).primary_key())
                    // A JSON array of variable names.
                    .col(text(TenantSettings::SensitiveVariables).default("[]"))
                    .col(integer_null(TenantSettings::RetentionDays))
                    .col(timestamp_with_time_zone(TenantSettings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tenant_settings_tenant")
                            .from(TenantSettings::Table, TenantSettings::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TenantSettings::Table).to_owned())
            .await
    }
}
