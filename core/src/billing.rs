//! Where plans, usage and billing events are stored: each tenant's plan, the calls it used and
//! the credits it was given per monthly period, and an audit trail of plan changes, grants and
//! payments. The counting policy (what counts, when to refuse) lives in the server; this is
//! its storage, the same on SQLite and PostgreSQL.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};
use serde_json::json;

use crate::engine::TenantId;
use crate::error::EngineError;
use crate::keys::{KeyStore, NewKey, PreparedKey, Tenant};

/// A period's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodUsage {
    /// Calls counted.
    pub used: u64,
    /// Calls added to the plan's for this period (grants, purchases).
    pub credits: u64,
}

/// A billing event.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingEvent {
    /// `plan_changed`, `credits_granted`, `payment`.
    pub kind: String,
    /// What happened (no personal data).
    pub detail: serde_json::Value,
    /// The payment provider's event id, for payments.
    pub external_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Storage of plans, usage and billing events.
#[derive(Clone)]
pub struct BillingStore {
    db: DatabaseConnection,
}

fn statement(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> Statement {
    let backend = db.get_database_backend();
    // Numbered parameters: `$1` on PostgreSQL, `?1` on SQLite.
    let sql = if backend == DbBackend::Sqlite {
        sql.replace('$', "?")
    } else {
        sql.to_owned()
    };
    Statement::from_sql_and_values(backend, sql, values)
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl BillingStore {
    /// On `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The tenant's plan name (`None`: no such tenant).
    ///
    /// # Errors
    /// Database failures.
    pub async fn plan_of(&self, tenant: TenantId) -> Result<Option<String>, EngineError> {
        self.plan_in(&self.db, tenant).await
    }

    /// [`BillingStore::plan_of`] through `conn`.
    async fn plan_in(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
    ) -> Result<Option<String>, EngineError> {
        let row = conn
            .query_one_raw(statement(
                &self.db,
                "SELECT plan FROM tenants WHERE id = $1",
                vec![tenant.0.into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get_by_index::<String>(0)?),
            None => None,
        })
    }

    /// Every tenant's plan name, by tenant name.
    ///
    /// # Errors
    /// Database failures.
    pub async fn all_plans(&self) -> Result<Vec<(String, String)>, EngineError> {
        let rows = self
            .db
            .query_all_raw(statement(
                &self.db,
                "SELECT name, plan FROM tenants ORDER BY id",
                vec![],
            ))
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get_by_index(0)?, r.try_get_by_index(1)?)))
            .collect()
    }

    /// Puts the tenant on `plan` (a name the caller checked) and records it, in one
    /// transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_plan(
        &self,
        tenant: TenantId,
        plan: &str,
        by: &str,
    ) -> Result<(), EngineError> {
        let txn = begin_write(&self.db).await?;
        self.set_plan_in(&txn, tenant, plan, by).await?;
        txn.commit().await?;
        Ok(())
    }

    /// [`BillingStore::set_plan`] through `conn`.
    async fn set_plan_in(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        plan: &str,
        by: &str,
    ) -> Result<(), EngineError> {
        let before = self.plan_in(conn, tenant).await?;
        conn.execute_raw(statement(
            &self.db,
            "UPDATE tenants SET plan = $1 WHERE id = $2",
            vec![plan.into(), tenant.0.into()],
        ))
        .await?;
        self.insert_event(
            conn,
            tenant,
            "plan_changed",
            &json!({"from": before, "to": plan, "by": by}),
            None,
        )
        .await?;
        Ok(())
    }

    /// A new tenant on `plan` with its first key, all or nothing: the tenant, its plan (and
    /// the billing event that records it) and the key in one transaction. The key was hashed
    /// before ([`KeyStore::prepare_key`]).
    ///
    /// # Errors
    /// `invalid` name, `tenant_exists`, or database failures (nothing is stored then).
    pub async fn sign_up(
        &self,
        keys: &KeyStore,
        name: &str,
        plan: &str,
        key: PreparedKey,
    ) -> Result<(Tenant, NewKey), EngineError> {
        let txn = begin_write(&self.db).await?;
        let tenant = keys.create_tenant_in(&txn, name).await?;
        self.set_plan_in(&txn, tenant.id, plan, "signup").await?;
        let key = keys.insert_key(&txn, tenant.id, key).await?;
        txn.commit().await?;
        Ok((tenant, key))
    }

    /// The period's counts (zero when nothing was counted yet).
    ///
    /// # Errors
    /// Database failures.
    pub async fn usage(&self, tenant: TenantId, period: &str) -> Result<PeriodUsage, EngineError> {
        let row = self
            .db
            .query_one_raw(statement(
                &self.db,
                "SELECT used, credits FROM usage_periods WHERE tenant_id = $1 AND period = $2",
                vec![tenant.0.into(), period.into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => PeriodUsage {
                used: count(r.try_get_by_index(0)?),
                credits: count(r.try_get_by_index(1)?),
            },
            None => PeriodUsage::default(),
        })
    }

    /// Adds `calls` to the period's count; the counts after.
    ///
    /// # Errors
    /// Database failures.
    pub async fn add_used(
        &self,
        tenant: TenantId,
        period: &str,
        calls: u64,
    ) -> Result<PeriodUsage, EngineError> {
        self.upsert(tenant, period, calls, 0).await
    }

    /// Counts one call if the period has room for it under `included` (plus its credits):
    /// the counts after, or `None` when it is full. Atomic: processes sharing the database
    /// cannot both take the last call.
    ///
    /// # Errors
    /// Database failures.
    pub async fn reserve(
        &self,
        tenant: TenantId,
        period: &str,
        included: u64,
    ) -> Result<Option<PeriodUsage>, EngineError> {
        self.upsert(tenant, period, 0, 0).await?;
        let row = self
            .db
            .query_one_raw(statement(
                &self.db,
                "UPDATE usage_periods SET used = used + 1 \
                 WHERE tenant_id = $1 AND period = $2 AND used < $3 + credits \
                 RETURNING used, credits",
                vec![tenant.0.into(), period.into(), signed(included).into()],
            ))
            .await?;
        Ok(match row {
            Some(r) => Some(PeriodUsage {
                used: count(r.try_get_by_index(0)?),
                credits: count(r.try_get_by_index(1)?),
            }),
            None => None,
        })
    }

    /// Gives back a call [`reserve`](Self::reserve)d for a request that failed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn release(&self, tenant: TenantId, period: &str) -> Result<(), EngineError> {
        self.db
            .execute_raw(statement(
                &self.db,
                "UPDATE usage_periods SET used = used - 1 \
                 WHERE tenant_id = $1 AND period = $2 AND used > 0",
                vec![tenant.0.into(), period.into()],
            ))
            .await?;
        Ok(())
    }

    /// Adds `calls` to the period's credits and records why (`kind`, `detail`); with an
    /// `external_id` (a payment provider's event id) only once: `false` when that id was
    /// applied before.
    ///
    /// # Errors
    /// Database failures.
    pub async fn add_credits(
        &self,
        tenant: TenantId,
        period: &str,
        calls: u64,
        kind: &str,
        detail: &serde_json::Value,
        external_id: Option<&str>,
    ) -> Result<bool, EngineError> {
        let txn = begin_write(&self.db).await?;
        if !self
            .insert_event(&txn, tenant, kind, detail, external_id)
            .await?
        {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.execute_raw(statement(
            &self.db,
            "INSERT INTO usage_periods (tenant_id, period, used, credits) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (tenant_id, period) DO UPDATE SET credits = usage_periods.credits + $3",
            vec![tenant.0.into(), period.into(), signed(calls).into()],
        ))
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Records a billing event; `false` when `external_id` was recorded before.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record(
        &self,
        tenant: TenantId,
        kind: &str,
        detail: &serde_json::Value,
        external_id: Option<&str>,
    ) -> Result<bool, EngineError> {
        self.insert_event(&self.db, tenant, kind, detail, external_id)
            .await
    }

    /// Puts the tenant on `plan` for a payment recorded with `external_id`, all or nothing:
    /// `false` when that payment was applied before.
    ///
    /// # Errors
    /// Database failures (nothing is written then, and a retry applies it).
    pub async fn pay_for_plan(
        &self,
        tenant: TenantId,
        plan: &str,
        detail: &serde_json::Value,
        external_id: &str,
    ) -> Result<bool, EngineError> {
        let before = self.plan_of(tenant).await?;
        let txn = begin_write(&self.db).await?;
        if !self
            .insert_event(&txn, tenant, "payment", detail, Some(external_id))
            .await?
        {
            txn.rollback().await?;
            return Ok(false);
        }
        txn.execute_raw(statement(
            &self.db,
            "UPDATE tenants SET plan = $1 WHERE id = $2",
            vec![plan.into(), tenant.0.into()],
        ))
        .await?;
        self.insert_event(
            &txn,
            tenant,
            "plan_changed",
            &json!({"from": before, "to": plan, "by": "stripe"}),
            None,
        )
        .await?;
        txn.commit().await?;
        Ok(true)
    }

    /// Inserts a billing event through `conn`; `false` when `external_id` was recorded
    /// before.
    async fn insert_event(
        &self,
        conn: &impl ConnectionTrait,
        tenant: TenantId,
        kind: &str,
        detail: &serde_json::Value,
        external_id: Option<&str>,
    ) -> Result<bool, EngineError> {
        let inserted = conn
            .execute_raw(statement(
                &self.db,
                "INSERT INTO billing_events (tenant_id, kind, detail, external_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (external_id) DO NOTHING",
                vec![
                    tenant.0.into(),
                    kind.into(),
                    detail.to_string().into(),
                    external_id.map(str::to_owned).into(),
                    crate::now().into(),
                ],
            ))
            .await?
            .rows_affected();
        Ok(inserted > 0)
    }

    /// The tenant's billing events, newest first, at most `limit`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn events(
        &self,
        tenant: TenantId,
        limit: u64,
    ) -> Result<Vec<BillingEvent>, EngineError> {
        let rows = self
            .db
            .query_all_raw(statement(
                &self.db,
                "SELECT kind, detail, external_id, created_at FROM billing_events \
                 WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
                vec![tenant.0.into(), signed(limit).into()],
            ))
            .await?;
        rows.into_iter()
            .map(|r| {
                let detail: String = r.try_get_by_index(1)?;
                Ok(BillingEvent {
                    kind: r.try_get_by_index(0)?,
                    detail: serde_json::from_str(&detail)?,
                    external_id: r.try_get_by_index(2)?,
                    at: r.try_get_by_index(3)?,
                })
            })
            .collect()
    }

    async fn upsert(
        &self,
        tenant: TenantId,
        period: &str,
        used: u64,
        credits: u64,
    ) -> Result<PeriodUsage, EngineError> {
        let row = self
            .db
            .query_one_raw(statement(
                &self.db,
                "INSERT INTO usage_periods (tenant_id, period, used, credits) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, period) DO UPDATE SET \
                 used = usage_periods.used + $3, credits = usage_periods.credits + $4 \
                 RETURNING used, credits",
                vec![
                    tenant.0.into(),
                    period.into(),
                    signed(used).into(),
                    signed(credits).into(),
                ],
            ))
            .await?;
        Ok(match row {
            Some(r) => PeriodUsage {
                used: count(r.try_get_by_index(0)?),
                credits: count(r.try_get_by_index(1)?),
            },
            None => PeriodUsage::default(),
        })
    }
}

/// A write transaction: on SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so that
/// a read followed by a write in it never fails because another connection wrote in between
/// (a deferred transaction cannot upgrade past a newer commit: `SQLITE_BUSY_SNAPSHOT`).
async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        _ => db.begin().await,
    }
}
