//! Database schema for Sticky Calls, as sea-orm migrations that run on SQLite and
//! PostgreSQL. The server applies them at start; nothing else creates tables.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261123_000002_connector_settings;
mod m20261125_000003_customer_contexts;
mod m20261205_000004_tenant_settings;
mod m20261205_000005_audit_events;
mod m20261205_000006_memory_lifecycle;
mod m20261205_000007_key_scopes;
mod m20261205_000008_plans;
mod m20261206_000009_calls_tenant_key;
mod m20261206_000010_room_for_updates;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_connector_settings::Migration),
            Box::new(m20261125_000003_customer_contexts::Migration),
            Box::new(m20261205_000004_tenant_settings::Migration),
            Box::new(m20261205_000005_audit_events::Migration),
            Box::new(m20261205_000006_memory_lifecycle::Migration),
            Box::new(m20261205_000007_key_scopes::Migration),
            Box::new(m20261205_000008_plans::Migration),
            Box::new(m20261206_000009_calls_tenant_key::Migration),
            Box::new(m20261206_000010_room_for_updates::Migration),
        ]
    }
}
