//! What an end locks on PostgreSQL, so that ends of one tenant run side by side.
//!
//! Every write of a tenant takes the tenant's advisory lock (`pg_advisory_xact_lock(tenant)`).
//! Ends take it shared and then lock only what they touch, in one order, so that two ends
//! do not wait on each other in a circle:
//!
//! 1. the call (`call_id`), before its row is read, and in the same statement the identities
//!    (number, external ids) and customer reference the end's request names, sorted:
//!    concurrent ends from one new number create one provisional customer, and two ends
//!    naming one new reference create one customer;
//! 2. identities the call's start recorded that the request does not name, once the call's
//!    row is read (usually none; see [`lock`]);
//! 3. the one customer the end writes to, by its row (`SELECT ... FOR UPDATE`, read afresh;
//!    a customer named by reference is read and locked in one statement).
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
pub(super) enum Locking<'a> {
    /// Nothing else of the tenant writes meanwhile: SQLite's one writer, or PostgreSQL's
    /// tenant lock held exclusively.
    Exclusive,
    /// PostgreSQL with the tenant lock shared: the end locks what it touches (see above).
    /// `held`: the identities and reference [`begin_end`] already locked.
    Fine { held: &'a [LockKey] },
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

/// The first statement of a fine end: the tenant's lock shared, the call's lock, and the
/// identities and reference its request names (`named`, sorted and deduplicated here), which
/// are usually all it touches (the call's stored identities, read next, may add some: see
/// [`lock`]). One round trip instead of two.
///
/// Unless every commit must reach the disk first (`STICKY_SYNC=full`), the same statement
/// makes the end's transaction commit without waiting for PostgreSQL's log flush
/// (`synchronous_commit = off` for this transaction only): the end is visible to every
/// process at its commit, and survives a crash of the server process, as on SQLite; a crash
/// of PostgreSQL or of its machine may lose the last fraction of a second of ends.
pub(super) async fn begin_end(
    c: Conn<'_>,
    tenant: TenantId,
    call_id: &str,
    named: &mut Vec<LockKey>,
) -> Result<(), EngineError> {
    named.sort_unstable();
    named.dedup();
    let LockKey(a, b) = LockKey::call(tenant, call_id);
    let mut args: Vec<Arg<'_>> = vec![tenant.0.into(), i64::from(a).into(), i64::from(b).into()];
    let mut sql = String::from(if crate::db::full_sync() {
        "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2::int4, $3::int4)"
    } else {
        "SELECT set_config('synchronous_commit', 'off', true), \
         pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock($2::int4, $3::int4)"
    });
    push_locks(&mut sql, &mut args, named);
    c.execute(&sql, &args).await?;
    Ok(())
}

/// Appends `pg_advisory_xact_lock` calls for `keys` (in their order) to a select list.
fn push_locks(sql: &mut String, args: &mut Vec<Arg<'_>>, keys: &[LockKey]) {
    for LockKey(a, b) in keys {
        let n = args.len();
        sql.push_str(&format!(
            "{}pg_advisory_xact_lock(${}::int4, ${}::int4)",
            if n == 0 { "" } else { ", " },
            n + 1,
            n + 2
        ));
        args.push(i64::from(*a).into());
        args.push(i64::from(*b).into());
    }
}

/// Takes these locks, in their order (sorted, each once), in one statement, except those
/// `held` already. Those taken after [`begin_end`]'s (identities the call's start recorded
/// that the end's request does not name) come after them, out of the one sorted order: two
/// such ends can wait on each other in a circle, which PostgreSQL detects and breaks, and
/// the end runs again ([`retryable`]). Rare: it takes two calls whose starts and ends name
/// each other's identities.
pub(super) async fn lock(
    c: Conn<'_>,
    mut keys: Vec<LockKey>,
    held: &[LockKey],
) -> Result<(), EngineError> {
    keys.sort_unstable();
    keys.dedup();
    keys.retain(|k| held.binary_search(k).is_err());
    if keys.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("SELECT ");
    let mut args = Vec::with_capacity(2 * keys.len());
    push_locks(&mut sql, &mut args, &keys);
    c.execute(&sql, &args).await?;
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
