//! What an end locks on PostgreSQL, so that ends of one tenant run side by side.
//!
//! Every write of a tenant takes the tenant's advisory lock (`pg_advisory_xact_lock(tenant)`).
//! Ends take it shared and then lock only what they touch, in one order, so that two ends
//! do not wait on each other in a circle. Ends run in batches, one transaction for a batch
//! (`end_batch.rs`), and a batch takes the locks of all its ends:
//!
//! 1. the calls (`call_id`), before their rows are read, and in the same statement the
//!    identities (number, external ids) and customer references the ends' requests name, all
//!    sorted together: concurrent ends from one new number create one provisional customer,
//!    and two ends naming one new reference create one customer;
//! 2. identities the call's start recorded that the request does not name, once the call's
//!    row is read (usually none; see [`lock`]);
//! 3. the one customer each end writes to, by its row (`SELECT ... FOR NO KEY UPDATE`, read
//!    afresh; the customers named by reference, and those the calls are linked to, are read
//!    and locked for the whole batch in one statement each, in the order of their ids within
//!    the statement). Not `FOR UPDATE`: that would also wait for, and hold up, the foreign
//!    keys' checks of rows being written that name the customer (a start's call row, on any
//!    process), which share-lock it until their batch commits. Only an end that names a
//!    provisional customer locks it `FOR UPDATE`: giving it a reference changes a column
//!    with a unique index, which waits for those rows whatever the lock taken before.
//!
//! Ends of one batch run one after another in its transaction, so each sees what the ones
//! before it wrote, as if they had run one at a time.
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
#[derive(Debug, Clone, Copy)]
pub(super) enum Locking<'a> {
    /// Nothing else of the tenant writes meanwhile: SQLite's one writer, or PostgreSQL's
    /// tenant lock held exclusively.
    Exclusive,
    /// PostgreSQL with the tenant lock shared: the end locks what it touches (see above).
    /// `held`: the locks its transaction holds already, sorted (those [`begin_ends`] took);
    /// `known`: what its batch read for it under them (`end_batch.rs`).
    Fine {
        held: &'a [LockKey],
        known: &'a super::end::Known,
    },
}

/// A lock in PostgreSQL's two-key advisory space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// The first statement of a batch of fine ends (`end_batch.rs`): the shared lock of each of
/// their tenants, then the lock of each call and of the identities and references their
/// requests name (`keys`), which are usually all they touch (a call's stored identities, read
/// next, may add some: see [`lock`]). All in one sorted order (`tenants` and `keys` are sorted
/// and deduplicated here), one statement whatever the number of ends: its text never changes.
///
/// With `wait`, it waits for each tenant's lock. Without, it only tries them
/// (`pg_try_advisory_xact_lock_shared`) and answers the tenants whose lock another write
/// holds or waits for (an erasure, an import's transaction, a sweep): the batch then gives
/// way, and those tenants' ends wait apart from it, so that a write of one tenant holds up no
/// other tenant's ends (`end_batch.rs`). Empty when it took them all.
///
/// Unless every commit must reach the disk first (`STICKY_SYNC=full`), the same statement
/// makes the transaction commit without waiting for PostgreSQL's log flush
/// (`synchronous_commit = off` for this transaction only): the ends are visible to every
/// process at its commit, and survive a crash of the server process, as on SQLite; a crash of
/// PostgreSQL or of its machine may lose the last fraction of a second of ends.
pub(super) async fn begin_ends(
    c: Conn<'_>,
    tenants: &mut Vec<i64>,
    keys: &mut Vec<LockKey>,
    wait: bool,
) -> Result<Vec<i64>, EngineError> {
    /// The tenants' locks, then the keys', as `tenants` (with `wait`, a count) or `blocked`
    /// (the tenants not locked: `1,2`, or null), and `locked` (a count).
    fn locks(wait: bool) -> String {
        let tenants =
            "(SELECT t FROM unnest(string_to_array($1, ',')::int8[]) AS u(t) ORDER BY t) s";
        let tenants = if wait {
            format!(
                "(SELECT count(pg_advisory_xact_lock_shared(t))::text FROM {tenants}) AS tenants"
            )
        } else {
            format!(
                "(SELECT string_agg(t::text, ',') FROM {tenants} \
                 WHERE NOT pg_try_advisory_xact_lock_shared(t)) AS blocked"
            )
        };
        format!(
            "{tenants}, (SELECT count(pg_advisory_xact_lock(a, b)) FROM (SELECT a, b FROM \
             unnest(string_to_array($2, ',')::int4[], string_to_array($3, ',')::int4[]) \
             AS k(a, b) ORDER BY a, b) s) AS locked"
        )
    }
    static SQL: std::sync::LazyLock<[String; 4]> = std::sync::LazyLock::new(|| {
        let async_commit = "set_config('synchronous_commit', 'off', true) AS sync";
        [
            format!("SELECT {async_commit}, {}", locks(true)),
            format!("SELECT {async_commit}, {}", locks(false)),
            format!("SELECT {}", locks(true)),
            format!("SELECT {}", locks(false)),
        ]
    });
    tenants.sort_unstable();
    tenants.dedup();
    keys.sort_unstable();
    keys.dedup();
    let full = crate::db::full_sync();
    let sql = &SQL[usize::from(full) * 2 + usize::from(!wait)];
    // The tenants' column follows `sync` unless there is none.
    let column = usize::from(!full);
    let blocked = c
        .query_one(
            sql,
            &[
                joined(tenants.iter()).as_str().into(),
                joined(keys.iter().map(|k| k.0)).as_str().into(),
                joined(keys.iter().map(|k| k.1)).as_str().into(),
            ],
            |r| r.text(column),
        )
        .await?
        .flatten();
    Ok(match (wait, blocked) {
        (false, Some(list)) => list
            .split(',')
            .map(|t| {
                t.parse()
                    .map_err(|_| EngineError::Corrupt(format!("a tenant lock answered {t:?}")))
            })
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    })
}

/// `1,2,3`.
fn joined<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let mut text = String::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&item.to_string());
    }
    text
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
/// `held` already. Those taken after [`begin_ends`]'s (identities the call's start recorded
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
