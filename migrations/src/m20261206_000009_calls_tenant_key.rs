//! PostgreSQL: `calls` no longer has a foreign key to `tenants`.
//!
//! Every insert of a call row checked it by locking the tenant's row (`FOR KEY SHARE`), and
//! every start batch and end of a tenant inserts one: the one row all of a tenant's concurrent
//! writes locked, which PostgreSQL records as a new multixact each time (all the current
//! lockers copied into it). It guarded nothing a request can reach: a call's tenant is the
//! tenant of the API key that wrote it, and tenants are never deleted. The call's links to
//! customers keep their keys (erasure relies on them).
//!
//! SQLite keeps the key: it checks it with an index look-up and no lock, and dropping it
//! there would rebuild the table.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE calls DROP CONSTRAINT IF EXISTS fk_calls_tenant")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE calls ADD CONSTRAINT fk_calls_tenant FOREIGN KEY (tenant_id) \
                 REFERENCES tenants (id) ON DELETE CASCADE",
            )
            .await?;
        Ok(())
    }
}
