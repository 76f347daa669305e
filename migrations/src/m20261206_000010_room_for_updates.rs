//! PostgreSQL: the tables every end updates keep room in each page for the rows' next
//! versions (`fillfactor`).
//!
//! An end rewrites its customer's row (the call count), document, variables, identity links
//! and open intents. PostgreSQL writes each new version of a row beside the old one, without
//! touching the table's indexes (a "HOT" update), only when the page has room for it; with
//! pages filled to the brim (the default, and what an import writes), nearly every update
//! put the row in another page and added an entry to each of the table's indexes. None of
//! these updates changes an indexed column, so with room left they stay in their page.
//!
//! The setting applies to pages written from now on (an import, new rows); pages already
//! full get room back as their old row versions are cleaned up. SQLite has no such setting.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each table and the share of its pages filled by inserts, in percent: a document (about
/// 1 KB, up to a few) leaves room for two or three new versions in a page; the other rows are
/// small, so a tenth of a page holds many.
const TABLES: [(&str, u8); 5] = [
    ("customer_contexts", 70),
    ("customers", 90),
    ("identities", 90),
    ("variables", 90),
    ("intents", 90),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for (table, fill) in TABLES {
            manager
                .get_connection()
                .execute_unprepared(&format!("ALTER TABLE {table} SET (fillfactor = {fill})"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        for (table, _) in TABLES {
            manager
                .get_connection()
                .execute_unprepared(&format!("ALTER TABLE {table} RESET (fillfactor)"))
                .await?;
        }
        Ok(())
    }
}
