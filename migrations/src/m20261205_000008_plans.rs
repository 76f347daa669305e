//! Plans and usage: each tenant's plan, its calls counted per monthly period (with credits
//! granted or bought for that period), and the billing events (plan changes, grants,
//! payments) with the payment provider's event id for idempotency.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Plan,
}

#[derive(DeriveIden)]
enum UsagePeriods {
    Table,
    TenantId,
    Period,
    Used,
    Credits,
}

#[derive(DeriveIden)]
enum BillingEvents {
    Table,
    Id,
    TenantId,
    Kind,
    Detail,
    ExternalId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .add_column(string(Tenants::Plan).default("unlimited"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(UsagePeriods::Table)
                    .col(big_integer(UsagePeriods::TenantId))
                    .col(string(UsagePeriods::Period))
                    .col(big_integer(UsagePeriods::Used).default(0))
                    .col(big_integer(UsagePeriods::Credits).default(0))
                    .primary_key(
                        Index::create()
                            .col(UsagePeriods::TenantId)
                            .col(UsagePeriods::Period),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BillingEvents::Table)
                    .col(big_pk_auto(BillingEvents::Id))
                    .col(big_integer(BillingEvents::TenantId))
                    .col(string(BillingEvents::Kind))
                    .col(text(BillingEvents::Detail))
                    .col(string_null(BillingEvents::ExternalId).unique_key())
                    .col(timestamp_with_time_zone(BillingEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_billing_events_tenant")
                    .table(BillingEvents::Table)
                    .col(BillingEvents::TenantId)
                    .col(BillingEvents::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(BillingEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(UsagePeriods::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tenants::Table)
                    .drop_column(Tenants::Plan)
                    .to_owned(),
            )
            .await
    }
}
