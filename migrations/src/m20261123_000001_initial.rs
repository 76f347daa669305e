//! The initial schema: tenants and their API keys, customers with their identities, saved
//! variables and intents, and calls. Every data row carries `tenant_id`; every lookup index
//! starts with it (or with a customer id, which belongs to exactly one tenant).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    Prefix,
    SecretHash,
    Label,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
    TenantId,
    CustomerRef,
    Provisional,
    CallCount,
    FirstSeenAt,
    LastSeenAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
    TenantId,
    CustomerId,
    Kind,
    Value,
    CallCount,
    FirstSeenAt,
    LastSeenAt,
}

#[derive(DeriveIden)]
enum Variables {
    Table,
    Id,
    TenantId,
    CustomerId,
    Name,
    Value,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Intents {
    Table,
    Id,
    TenantId,
    CustomerId,
    Intent,
    Status,
    OpenedAt,
    UpdatedAt,
    ResolvedAt,
    LastCallId,
}

#[derive(DeriveIden)]
enum Calls {
    Table,
    Id,
    TenantId,
    CallId,
    Platform,
    Ani,
    AniWithheld,
    Dnis,
    ExternalIds,
    MatchedCustomerId,
    Confidence,
    Band,
    RecommendedAction,
    Signals,
    Candidates,
    CustomerId,
    Status,
    Intent,
    IntentStatus,
    Summary,
    Variables,
    StartedAt,
    EndedAt,
    CreatedAt,
    UpdatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(big_pk_auto(Tenants::Id))
                    .col(string_len_uniq(Tenants::Name, 64))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(string_len(ApiKeys::Id, 40).primary_key())
                    .col(big_integer(ApiKeys::TenantId))
                    .col(string_len_uniq(ApiKeys::Prefix, 32))
                    .col(string_len(ApiKeys::SecretHash, 100))
                    .col(string_len_null(ApiKeys::Label, 128))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_api_keys_tenant",
                        (ApiKeys::Table, ApiKeys::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(big_pk_auto(Customers::Id))
                    .col(big_integer(Customers::TenantId))
                    .col(string_len(Customers::CustomerRef, 128))
                    .col(boolean(Customers::Provisional))
                    .col(big_integer(Customers::CallCount))
                    .col(timestamp_with_time_zone_null(Customers::FirstSeenAt))
                    .col(timestamp_with_time_zone_null(Customers::LastSeenAt))
                    .col(timestamp_with_time_zone(Customers::CreatedAt))
                    .col(timestamp_with_time_zone(Customers::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_customers_tenant",
                        (Customers::Table, Customers::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_customers_tenant_ref")
                    .table(Customers::Table)
                    .col(Customers::TenantId)
                    .col(Customers::CustomerRef)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Identities::Table)
                    .col(big_pk_auto(Identities::Id))
                    .col(big_integer(Identities::TenantId))
                    .col(big_integer(Identities::CustomerId))
                    .col(string_len(Identities::Kind, 16))
                    .col(string_len(Identities::Value, 330))
                    .col(big_integer(Identities::CallCount))
                    .col(timestamp_with_time_zone(Identities::FirstSeenAt))
                    .col(timestamp_with_time_zone(Identities::LastSeenAt))
                    .foreign_key(&mut fk(
                        "fk_identities_customer",
                        (Identities::Table, Identities::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_identities_customer_kind_value")
                    .table(Identities::Table)
                    .col(Identities::CustomerId)
                    .col(Identities::Kind)
                    .col(Identities::Value)
                    .unique()
                    .to_owned(),
            )
            .await?;
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
            .create_table(
                Table::create()
                    .table(Variables::Table)
                    .col(big_pk_auto(Variables::Id))
                    .col(big_integer(Variables::TenantId))
                    .col(big_integer(Variables::CustomerId))
                    .col(string_len(Variables::Name, 64))
                    .col(text(Variables::Value))
                    .col(timestamp_with_time_zone(Variables::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_variables_customer",
                        (Variables::Table, Variables::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_variables_customer_name")
                    .table(Variables::Table)
                    .col(Variables::CustomerId)
                    .col(Variables::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Intents::Table)
                    .col(big_pk_auto(Intents::Id))
                    .col(big_integer(Intents::TenantId))
                    .col(big_integer(Intents::CustomerId))
                    .col(string_len(Intents::Intent, 128))
                    .col(string_len(Intents::Status, 16))
                    .col(timestamp_with_time_zone(Intents::OpenedAt))
                    .col(timestamp_with_time_zone(Intents::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Intents::ResolvedAt))
                    .col(string_len_null(Intents::LastCallId, 128))
                    .foreign_key(&mut fk(
                        "fk_intents_customer",
                        (Intents::Table, Intents::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_intents_customer_intent")
                    .table(Intents::Table)
                    .col(Intents::CustomerId)
                    .col(Intents::Intent)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Calls::Table)
                    .col(big_pk_auto(Calls::Id))
                    .col(big_integer(Calls::TenantId))
                    .col(string_len(Calls::CallId, 128))
                    .col(string_len(Calls::Platform, 32))
                    .col(string_len_null(Calls::Ani, 32))
                    .col(boolean(Calls::AniWithheld))
                    .col(string_len_null(Calls::Dnis, 64))
                    .col(text(Calls::ExternalIds))
                    .col(big_integer_null(Calls::MatchedCustomerId))
                    .col(double_null(Calls::Confidence))
                    .col(string_len_null(Calls::Band, 16))
                    .col(string_len_null(Calls::RecommendedAction, 16))
                    .col(text(Calls::Signals))
                    .col(text(Calls::Candidates))
                    .col(big_integer_null(Calls::CustomerId))
                    .col(string_len(Calls::Status, 16))
                    .col(string_len_null(Calls::Intent, 128))
                    .col(string_len_null(Calls::IntentStatus, 16))
                    .col(text_null(Calls::Summary))
                    .col(text(Calls::Variables))
                    .col(timestamp_with_time_zone_null(Calls::StartedAt))
                    .col(timestamp_with_time_zone_null(Calls::EndedAt))
                    .col(timestamp_with_time_zone(Calls::CreatedAt))
                    .col(timestamp_with_time_zone(Calls::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_calls_tenant",
                        (Calls::Table, Calls::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_calls_matched_customer",
                        (Calls::Table, Calls::MatchedCustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .foreign_key(&mut fk(
                        "fk_calls_customer",
                        (Calls::Table, Calls::CustomerId),
                        (Customers::Table, Customers::Id),
                        ForeignKeyAction::SetNull,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_calls_tenant_call_id")
                    .table(Calls::Table)
                    .col(Calls::TenantId)
                    .col(Calls::CallId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_calls_customer_ended")
                    .table(Calls::Table)
                    .col(Calls::CustomerId)
                    .col(Calls::EndedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_calls_matched_customer")
                    .table(Calls::Table)
                    .col(Calls::MatchedCustomerId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Calls::Table.into_iden(),
            Intents::Table.into_iden(),
            Variables::Table.into_iden(),
            Identities::Table.into_iden(),
            Customers::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
