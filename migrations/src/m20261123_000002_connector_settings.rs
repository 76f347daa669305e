//! Per-tenant platform settings whose secrets must be read back (a Twilio auth token),
//! encrypted with the server's key: only the nonce and the ciphertext are stored.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConnectorSettings {
    Table,
    Id,
    TenantId,
    Platform,
    Nonce,
    Ciphertext,
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
                    .table(ConnectorSettings::Table)
                    .col(big_pk_auto(ConnectorSettings::Id))
                    .col(big_integer(ConnectorSettings::TenantId))
                    .col(string_len(ConnectorSettings::Platform, 32))
                    .col(string_len(ConnectorSettings::Nonce, 32))
                    .col(text(ConnectorSettings::Ciphertext))
                    .col(timestamp_with_time_zone(ConnectorSettings::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_connector_settings_tenant")
                            .from(ConnectorSettings::Table, ConnectorSettings::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_connector_settings_tenant_platform")
                    .table(ConnectorSettings::Table)
                    .col(ConnectorSettings::TenantId)
                    .col(ConnectorSettings::Platform)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ConnectorSettings::Table).to_owned())
            .await
    }
}
