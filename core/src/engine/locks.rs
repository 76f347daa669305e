//! What an end locks on PostgreSQL, so that ends of one tenant run side by side.
//!
//! Every write of a tenant takes the tenant's advisory lock (`pg_advisory_xact_lock(tenant)`).
//! Ends take it shared and then lock only what they touch, in one order, so that two ends
//! never wait on each other in a circle:
//!
//! 1. the call (`call_id`), before its row is read;
//! 2. its identities (number, external ids) and the customer reference it names, sorted, in
//!    one statement: concurrent ends from one new number create one provisional customer, and
//!    two ends naming one new reference create one customer;
//! 3. the one customer the end writes to, by its row (`SELECT ... FOR UPDATE`, read afresh).
//!
//! An end that would write to two customers (a merge, a call moving from one to another)
//! gives up its transaction and runs again under the tenant's lock held exclusively, as do
//! erasures, unlinks, imports and settings. Those are rare; the usual end never waits for
//! another end of the same tenant unless they share a call, an identity or a customer.
//!
//! Keys of steps 1 and 2 are the first 8 bytes of the caches' digest of the tenant and the
//! thing (`cache::identity_digest`, SHA-256), in PostgreSQL's two-key advisory space, which
//! never meets the one-key space of the tenant locks. A collision only makes two unrelated
//! ends wait for each other.

use super::TenantId;
use super::sql::{Arg, Conn};
use crate::error::EngineError;

/// How an end's transaction is kept apart from other writes of its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locking {
    /// Nothing else of the tenant writes meanwhile: SQLite's one writer, or PostgreSQL's
    /// tenant lock held exclusively.
    Exclusive,
    /// PostgreSQL with the tenant lock shared: the end locks what it touches (see above).
    Fine,
}

/// A lock in PostgreSQL's two-key advisory space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct LockKey(i32, i32);

impl LockKey {
    fn of(tenant: TenantId, kind: &str, value: &str) -> Self {
        let d = super::cache::identity_digest(tenant, kind, value);
        Self(
            i32::from_be_bytes([d[0], d[1], d[2], d[3]]),
            i32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        )
    }

    /// A call of the tenant.
    pub(super) fn call(tenant: TenantId, call_id: &str) -> Self {
        Self::of(tenant, "call", call_id)
    }

    /// An identity (`ani` or `external_id` and its value).
    pub(super) fn identity(tenant: TenantId, kind: &str, value: &str) -> Self {
        Self::of(tenant, kind, value)
    }

    /// A customer reference.
    pub(super) fn customer_ref(tenant: TenantId, customer_ref: &str) -> Self {
        Self::of(tenant, "customer_ref", customer_ref)
    }
}

/// Takes the tenant's lock shared and the call's lock: the first statement of a fine end.
pub(super) async fn begin_end(
    c: Conn<'_>,
    tenant: TenantId,
    call_id: &str,
) -> Result<(), EngineError> {
    let LockKey(a, b) = LockKey::call(tenant, call_id);
    c.execute(
        "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2::int4, $3::int4)",
        &[tenant.0.into(), i64::from(a).into(), i64::from(b).into()],
    )
    .await?;
    Ok(())
}

/// Takes these locks, in their order (sorted, each once), in one statement.
pub(super) async fn lock(c: Conn<'_>, mut keys: Vec<LockKey>) -> Result<(), EngineError> {
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let calls: Vec<String> = (0..keys.len())
        .map(|i| {
            format!(
                "pg_advisory_xact_lock(${}::int4, ${}::int4)",
                2 * i + 1,
                2 * i + 2
            )
        })
        .collect();
    let args: Vec<Arg<'_>> = keys
        .iter()
        .flat_map(|LockKey(a, b)| [i64::from(*a).into(), i64::from(*b).into()])
        .collect();
    c.execute(&format!("SELECT {}", calls.join(", ")), &args)
        .await?;
    Ok(())
}

/// Whether a failed transaction may simply run again: PostgreSQL found a deadlock or a
/// serialisation failure and chose it to give way.
pub(super) fn retryable(e: &EngineError) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    let EngineError::Database(
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)),
    ) = e
    else {
        return false;
    };
    match e.as_ref() {
        sea_orm::sqlx::Error::Database(d) => {
            matches!(d.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_apart() {
        let t = TenantId(7);
        assert_eq!(LockKey::call(t, "c1"), LockKey::call(t, "c1"));
        assert_ne!(LockKey::call(t, "c1"), LockKey::call(TenantId(8), "c1"));
        assert_ne!(LockKey::call(t, "c1"), LockKey::customer_ref(t, "c1"));
        assert_ne!(
            LockKey::identity(t, "ani", "+1415"),
            LockKey::identity(t, "external_id", "+1415")
        );
        // The same bytes, cut differently, are different things.
        assert_ne!(LockKey::of(t, "ab", "c"), LockKey::of(t, "a", "bc"));
    }
}
