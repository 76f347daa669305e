//! A tenant's settings of memory: which variables are returned only to a caller recognised
//! with high confidence (`sensitive_variables`), and how long calls are kept
//! (`retention_days`; by default, for ever). Read on the paths that need them (a start at
//! medium confidence, the retention sweep), cached per process and forgotten across processes
//! when they change (see `crate::coherence`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::end::Touched;
use super::{ContextJson, Engine, StartAnswer, TenantId};
use crate::entities::{call, customer_context, tenant_setting, variable};
use crate::error::{EngineError, FieldError};
use crate::scoring::Band;

/// At most this many sensitive variable names.
pub const MAX_SENSITIVE_VARIABLES: usize = 100;
/// The longest retention: ten years.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Calls (or customers' variables) a sweep deletes per transaction: what the tenant's writes
/// wait for at most. Small enough that the customers a chunk touches fit one notification to
/// other processes (`coherence::MAX_PAYLOAD`), which then forget only those customers' answers
/// rather than every cached answer.
pub const SWEEP_CHUNK: u64 = 500;

/// A tenant's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSettings {
    /// Variables returned only when the caller is recognised with high confidence.
    pub sensitive_variables: BTreeSet<String>,
    /// Calls (with their summaries) older than this are deleted; `None`: kept.
    pub retention_days: Option<u32>,
}

impl TenantSettings {
    /// Validates settings as given.
    ///
    /// # Errors
    /// A [`FieldError`] naming the bad field.
    pub fn parse(
        sensitive_variables: Vec<String>,
        retention_days: Option<u32>,
    ) -> Result<Self, FieldError> {
        if sensitive_variables.len() > MAX_SENSITIVE_VARIABLES {
            return Err(FieldError::new(
                "sensitive_variables",
                format!("at most {MAX_SENSITIVE_VARIABLES} names"),
            ));
        }
        let mut names = BTreeSet::new();
        for name in sensitive_variables {
            crate::domain::VariableName::parse(&name)
                .map_err(|e| FieldError::new(format!("sensitive_variables.{name}"), e.0))?;
            names.insert(name);
        }
        if let Some(days) = retention_days
            && !(1..=MAX_RETENTION_DAYS).contains(&days)
        {
            return Err(FieldError::new(
                "retention_days",
                format!("must be 1 to {MAX_RETENTION_DAYS} days, or null to keep calls"),
            ));
        }
        Ok(Self {
            sensitive_variables: names,
            retention_days,
        })
    }
}

impl Engine {
    /// The tenant's settings (the defaults when it set none).
    ///
    /// # Errors
    /// Database failures.
    pub async fn settings(&self, tenant: TenantId) -> Result<Arc<TenantSettings>, EngineError> {
        let cached = self.settings_cache.get(&tenant.0).await;
        crate::stats::TENANT_SETTINGS.record(cached.is_some());
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let row = tenant_setting::Entity::find_by_id(tenant.0)
            .one(&self.db)
            .await?;
        let settings = Arc::new(match row {
            None => TenantSettings::default(),
            Some(r) => TenantSettings {
                sensitive_variables: serde_json::from_str(&r.sensitive_variables)?,
                retention_days: r.retention_days.and_then(|d| u32::try_from(d).ok()),
            },
        });
        self.settings_cache.insert(tenant.0, settings.clone()).await;
        Ok(settings)
    }

    /// Replaces the tenant's settings.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_settings(
        &self,
        tenant: TenantId,
        settings: &TenantSettings,
    ) -> Result<(), EngineError> {
        tenant_setting::Entity::insert(tenant_setting::ActiveModel {
            tenant_id: Set(tenant.0),
            sensitive_variables: Set(serde_json::to_string(&settings.sensitive_variables)?),
            retention_days: Set(settings.retention_days.and_then(|d| i32::try_from(d).ok())),
            updated_at: Set(crate::now()),
        })
        .on_conflict(
            OnConflict::column(tenant_setting::Column::TenantId)
                .update_columns([
                    tenant_setting::Column::SensitiveVariables,
                    tenant_setting::Column::RetentionDays,
                    tenant_setting::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        self.settings_cache.invalidate(&tenant.0).await;
        crate::coherence::notify(
            &self.db,
            &crate::coherence::Change::Settings {
                origin: self.caches.origin().to_owned(),
                tenant: tenant.0,
            },
        )
        .await?;
        Ok(())
    }

    /// Forgets a tenant's cached settings (changed by another process).
    pub(super) async fn forget_settings(&self, tenant: i64) {
        self.settings_cache.invalidate(&tenant).await;
    }

    /// A start's answer with the tenant's sensitive variables left out unless the caller was
    /// recognised with high confidence (at medium, the agent must verify the caller first).
    pub(super) async fn without_sensitive(
        &self,
        tenant: TenantId,
        mut answer: StartAnswer,
    ) -> Result<StartAnswer, EngineError> {
        if answer.band == Band::High {
            return Ok(answer);
        }
        let Some(context) = &answer.context else {
            return Ok(answer);
        };
        let settings = self.settings(tenant).await?;
        if settings.sensitive_variables.is_empty() {
            return Ok(answer);
        }
        let mut decoded = context.decode()?;
        let before = decoded.variables.len();
        decoded
            .variables
            .retain(|name, _| !settings.sensitive_variables.contains(name));
        if decoded.variables.len() != before {
            answer.context = Some(ContextJson::new(&decoded)?);
        }
        Ok(answer)
    }

    /// Deletes, for every tenant with a retention period, the calls (with their summaries and
    /// variables as recorded on the call) that ended, or started, before it; their customers'
    /// contexts are rebuilt on the next read. Returns the calls deleted.
    ///
    /// A tenant's calls go [`SWEEP_CHUNK`] at a time: each chunk is found without any lock
    /// (finding it may read all the tenant's calls, there being no index on their ends), then
    /// deleted in a transaction of its own under the tenant's lock. The tenant's ends (and on
    /// SQLite every write) wait for one chunk's deletion, not for the search nor the whole
    /// sweep, and the calls are never all held in memory. A chunk that fails is rolled back
    /// whole, the ones before it staying deleted; the next sweep deletes the rest.
    ///
    /// # Errors
    /// Database failures.
    pub async fn sweep_retention(&self, now: DateTime<Utc>) -> Result<u64, EngineError> {
        let tenants = tenant_setting::Entity::find()
            .filter(tenant_setting::Column::RetentionDays.is_not_null())
            .all(&self.db)
            .await?;
        let mut deleted = 0;
        for t in tenants {
            let Some(days) = t.retention_days else {
                continue;
            };
            let tenant = TenantId(t.tenant_id);
            let cutoff = now - chrono::Duration::days(i64::from(days));
            // Open calls started before the cutoff (only after a long stop: segments retire
            // within the hour) move into `calls` to be deleted there; the journal's records of
            // the calls deleted are overwritten (only segments that old can hold them).
            let age = (now - cutoff).to_std().ok();
            if let (Some(lite), Some(age)) = (&self.lite, age) {
                lite.move_open(lite.open_older_than(tenant, age)?).await?;
            }
            // Chunks follow the tenant's calls in the order of their ids (its unique index), so
            // that a chunk does not read again what those before it deleted.
            let mut after: Option<String> = None;
            loop {
                let found = self.find_old(tenant, cutoff, after.take()).await?;
                let Some((_, last_id)) = found.last() else {
                    break;
                };
                after = Some(last_id.clone());
                let last = found.len() < usize::try_from(SWEEP_CHUNK).unwrap_or(usize::MAX);
                deleted += self
                    .delete_old(
                        tenant,
                        cutoff,
                        found.into_iter().map(|c| c.0).collect(),
                        age,
                    )
                    .await?;
                if last {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// The tenant's next [`SWEEP_CHUNK`] calls past `cutoff` (ids and call ids), in the order
    /// of their call ids after `after`. Read without the tenant's lock (no write waits for it,
    /// nor it for one): reaching them may read every call of the tenant when few are old.
    async fn find_old(
        &self,
        tenant: TenantId,
        cutoff: DateTime<Utc>,
        after: Option<String>,
    ) -> Result<Vec<(i64, String)>, EngineError> {
        let mut page = call::Entity::find()
            .select_only()
            .column(call::Column::Id)
            .column(call::Column::CallId)
            .filter(call::Column::TenantId.eq(tenant.0))
            .filter(past(cutoff));
        if let Some(after) = after {
            page = page.filter(call::Column::CallId.gt(after));
        }
        Ok(page
            .order_by_asc(call::Column::CallId)
            .limit(SWEEP_CHUNK)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Deletes, in one transaction under the tenant's lock, those of these calls of the
    /// tenant's that are still past `cutoff` (an open call found past it may have ended since);
    /// the number deleted. Their customers' documents go with them, and the journal's records
    /// of them (SQLite) are overwritten once they are.
    async fn delete_old(
        &self,
        tenant: TenantId,
        cutoff: DateTime<Utc>,
        ids: Vec<i64>,
        age: Option<std::time::Duration>,
    ) -> Result<u64, EngineError> {
        let (_writer, tx) = self.begin_write(tenant).await?;
        let calls: Vec<(i64, String, Option<i64>)> =
            still_past(ids, cutoff).into_tuple().all(&tx).await?;
        if calls.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let customers: BTreeSet<i64> = calls.iter().filter_map(|c| c.2).collect();
        let deleted = delete_by_id(calls.iter().map(|c| c.0).collect())
            .exec(&tx)
            .await?
            .rows_affected;
        // Their documents listed those calls among the latest.
        self.commit_without_documents(tx, tenant, customers.into_iter().collect())
            .await?;
        if let Some(lite) = &self.lite {
            lite.scrub(tenant, calls.into_iter().map(|c| c.1).collect(), age)
                .await?;
        }
        Ok(deleted)
    }

    /// Deletes the variables whose time to live passed by `now` (answers have left them out
    /// since), tenant by tenant, the variables of [`SWEEP_CHUNK`] customers in each
    /// transaction; their customers' contexts are rebuilt on the next read. Returns the
    /// variables deleted.
    ///
    /// # Errors
    /// Database failures.
    pub async fn sweep_expired_variables(&self, now: DateTime<Utc>) -> Result<u64, EngineError> {
        let expired: Vec<(i64, i64)> = variable::Entity::find()
            .select_only()
            .column(variable::Column::TenantId)
            .column(variable::Column::CustomerId)
            .filter(variable::Column::ExpiresAt.lte(now))
            .distinct()
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_tenant: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for (tenant, customer) in expired {
            by_tenant.entry(tenant).or_default().push(customer);
        }
        let mut deleted = 0;
        for (tenant, mut customers) in by_tenant {
            let tenant = TenantId(tenant);
            customers.sort_unstable();
            customers.dedup();
            for customers in customers.chunks(usize::try_from(SWEEP_CHUNK).unwrap_or(1)) {
                let (_writer, tx) = self.begin_write(tenant).await?;
                // Under the write lock: a variable saved again since (without a time to live,
                // or with a later one) is not expired any more and stays.
                deleted += variable::Entity::delete_many()
                    .filter(variable::Column::TenantId.eq(tenant.0))
                    .filter(variable::Column::CustomerId.is_in(customers.iter().copied()))
                    .filter(variable::Column::ExpiresAt.lte(now))
                    .exec(&tx)
                    .await?
                    .rows_affected;
                self.commit_without_documents(tx, tenant, customers.to_vec())
                    .await?;
            }
        }
        Ok(deleted)
    }

    /// Drops these customers' stored documents (rebuilt on the next read) and commits, telling
    /// the caches and the other processes that only these customers' answers changed (the
    /// identities' links keep their counts).
    async fn commit_without_documents(
        &self,
        tx: sea_orm::DatabaseTransaction,
        tenant: TenantId,
        customers: Vec<i64>,
    ) -> Result<(), EngineError> {
        customer_context::Entity::delete_many()
            .filter(customer_context::Column::CustomerId.is_in(customers.iter().copied()))
            .exec(&tx)
            .await?;
        self.commit(tx, Touched::some(tenant, customers, Vec::new()))
            .await
    }
}

/// Of these calls (ids, call ids and customers), those still past `cutoff`. By id, not by
/// tenant as well (the ids are one tenant's, and a call's tenant and id never change): given
/// the tenant, SQLite would walk all its calls along an index that starts with it.
fn still_past(ids: Vec<i64>, cutoff: DateTime<Utc>) -> sea_orm::Select<call::Entity> {
    call::Entity::find()
        .select_only()
        .column(call::Column::Id)
        .column(call::Column::CallId)
        .column(call::Column::CustomerId)
        .filter(call::Column::Id.is_in(ids))
        .filter(past(cutoff))
}

/// Deletes these calls (by id alone, as [`still_past`] reads them).
fn delete_by_id(ids: Vec<i64>) -> sea_orm::DeleteMany<call::Entity> {
    call::Entity::delete_many().filter(call::Column::Id.is_in(ids))
}

/// Calls past a retention cutoff: ended before it, or still open and started before it.
fn past(cutoff: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(call::Column::EndedAt.lt(cutoff))
        .add(
            sea_orm::Condition::all()
                .add(call::Column::EndedAt.is_null())
                .add(call::Column::StartedAt.lt(cutoff)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated_naming_the_field() {
        assert!(TenantSettings::parse(vec!["card_last4".into()], Some(30)).is_ok());
        assert_eq!(
            TenantSettings::parse(vec!["bad name".into()], None)
                .unwrap_err()
                .field,
            "sensitive_variables.bad name"
        );
        assert_eq!(
            TenantSettings::parse(Vec::new(), Some(0))
                .unwrap_err()
                .field,
            "retention_days"
        );
        assert!(TenantSettings::parse(Vec::new(), Some(MAX_RETENTION_DAYS + 1)).is_err());
    }

    /// A call found past the period but ended before its chunk took the lock stays; the
    /// others found go.
    #[tokio::test]
    async fn a_chunk_deletes_only_the_calls_still_old_under_the_lock() {
        use sea_orm::{ConnectionTrait, Statement};
        let (db, tenant, other) = super::super::tests::two_tenants().await;
        let engine = Engine::open(db.clone(), crate::domain::DefaultRegion::default())
            .await
            .unwrap();
        for (t, call) in [(tenant, "a"), (tenant, "b"), (tenant, "c"), (other, "a")] {
            let cmd = super::super::tests::start(call);
            engine.start_call(t, cmd).await.unwrap();
        }
        let now = crate::now();
        let sql = |sql: &str, at: DateTime<Utc>| {
            let db = db.clone();
            let sql = sql.to_owned();
            async move {
                db.execute_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    sql,
                    [at.into()],
                ))
                .await
                .unwrap();
            }
        };
        // Open, started 40 days ago: past a 30 days' period, all of them.
        sql(
            "UPDATE calls SET started_at = ?",
            now - chrono::Duration::days(40),
        )
        .await;
        // "c" was never old.
        sql("UPDATE calls SET started_at = ? WHERE call_id = 'c'", now).await;
        let cutoff = now - chrono::Duration::days(30);
        let found = engine.find_old(tenant, cutoff, None).await.unwrap();
        let names: Vec<&str> = found.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(names, ["a", "b"], "the tenant's old calls, in order");
        assert!(
            engine
                .find_old(tenant, cutoff, Some("b".into()))
                .await
                .unwrap()
                .is_empty()
        );

        // "b" ends meanwhile: no longer past the period.
        sql("UPDATE calls SET ended_at = ? WHERE call_id = 'b'", now).await;
        let deleted = engine
            .delete_old(tenant, cutoff, found.iter().map(|c| c.0).collect(), None)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let left: Vec<(i64, String)> = call::Entity::find()
            .select_only()
            .column(call::Column::TenantId)
            .column(call::Column::CallId)
            .order_by_asc(call::Column::Id)
            .into_tuple()
            .all(&db)
            .await
            .unwrap();
        let left: Vec<(TenantId, &str)> = left
            .iter()
            .map(|(t, c)| (TenantId(*t), c.as_str()))
            .collect();
        assert_eq!(left, [(tenant, "b"), (tenant, "c"), (other, "a")]);
    }

    /// A chunk's calls are read again, and deleted, by their ids (a chunk's worth of them), not
    /// by walking the tenant's calls.
    #[tokio::test]
    async fn a_chunk_reads_and_deletes_its_calls_by_id() {
        use sea_orm::{DbBackend, QueryTrait};
        let ids: Vec<i64> = (1..=i64::try_from(SWEEP_CHUNK).unwrap()).collect();
        let read = still_past(ids.clone(), crate::now()).build(DbBackend::Sqlite);
        let delete = delete_by_id(ids).build(DbBackend::Sqlite);
        for statement in [read, delete] {
            let plan = super::super::sqlite_plan(statement).await;
            assert!(plan.contains("INTEGER PRIMARY KEY"), "{plan}");
        }
    }
}
