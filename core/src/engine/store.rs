//! Queries shared by the engine's operations: finding a call, gathering the evidence for a set
//! of hints, and loading a customer's context. Each is a bounded number of indexed queries
//! whatever the size of the customer's history.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::sql::{Arg, Conn, Row, Write};
use super::{
    CallRecord, CustomerContext, OPEN_INTENTS, OpenIntent, RECENT_CALLS, RecentCall, TenantId,
};
use crate::domain::{Ani, ExternalId};
use crate::entities::{call, customer, identity};
use crate::error::EngineError;
use crate::scoring::{AniEvidence, Evidence, ExternalEvidence, IdentityLink};

/// The columns of `calls` a row is written with: all but `id`, in [`call::Model`]'s order.
/// The one list of them: reads ([`CALL_COLUMNS`]), a start's row ([`insert_calls`]) and the
/// bulk import all use it.
macro_rules! call_written_columns {
    () => {
        "tenant_id, call_id, platform, ani, ani_withheld, dnis, external_ids, \
         matched_customer_id, confidence, band, recommended_action, signals, candidates, \
         customer_id, status, intent, intent_status, summary, variables, started_at, ended_at, \
         created_at, updated_at"
    };
}

/// The columns of `calls`, in [`call::Model`]'s order (see [`call_from_row`]).
pub(super) const CALL_COLUMNS: &str = concat!("id, ", call_written_columns!());

/// See [`call_written_columns`].
pub(super) const CALL_WRITTEN_COLUMNS: &str = call_written_columns!();

/// How many columns [`call_args`] binds.
pub(super) const CALL_WIDTH: usize = 23;

/// A call row's values for [`CALL_WRITTEN_COLUMNS`].
pub(super) fn call_args(row: &call::Model) -> [Arg<'_>; CALL_WIDTH] {
    [
        row.tenant_id.into(),
        (&row.call_id).into(),
        (&row.platform).into(),
        (&row.ani).into(),
        row.ani_withheld.into(),
        (&row.dnis).into(),
        (&row.external_ids).into(),
        row.matched_customer_id.into(),
        row.confidence.into(),
        (&row.band).into(),
        (&row.recommended_action).into(),
        (&row.signals).into(),
        (&row.candidates).into(),
        row.customer_id.into(),
        (&row.status).into(),
        (&row.intent).into(),
        (&row.intent_status).into(),
        (&row.summary).into(),
        (&row.variables).into(),
        row.started_at.into(),
        row.ended_at.into(),
        row.created_at.into(),
        row.updated_at.into(),
    ]
}

/// `VALUES` placeholders for `rows` rows of `width` values: `($1, $2), ($3, $4)`, or `(?, ?),
/// (?, ?)` when `positional` (SQLite through sqlx, which looks every `$n` up by name: quadratic
/// in the number of parameters of a large insert).
pub(super) fn placeholders(rows: usize, width: usize, positional: bool) -> String {
    let mut sql = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for k in 0..width {
            if k > 0 {
                sql.push_str(", ");
            }
            if positional {
                sql.push('?');
            } else {
                sql.push('$');
                sql.push_str(&(r * width + k + 1).to_string());
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts call rows unless their call id exists; the `(tenant, call id)` of those inserted.
/// Numbered placeholders: this is the start's statement (prepared once per connection for one
/// row), and a batch of starts on in-memory SQLite (PostgreSQL's: [`insert_calls_pg`]).
pub(super) async fn insert_calls(
    c: Conn<'_>,
    rows: &[&call::Model],
) -> Result<Vec<(i64, String)>, EngineError> {
    static ONE: LazyLock<String> = LazyLock::new(|| insert_calls_sql(1));
    let many;
    let sql = if rows.len() == 1 {
        ONE.as_str()
    } else {
        many = insert_calls_sql(rows.len());
        many.as_str()
    };
    let args: Vec<Arg<'_>> = rows.iter().flat_map(|r| call_args(r)).collect();
    c.query(sql, &args, |r| Ok((r.int_req(0)?, r.text_req(1)?)))
        .await
}

/// Inserts call rows on PostgreSQL unless their call id exists, bound as one array per column
/// (`unnest`): one statement whatever the number of rows, prepared once. A `VALUES` list (a
/// statement per batch size, a parameter per value) cost PostgreSQL about half as much again
/// per row. The `(tenant, call id)` of those inserted.
pub(super) async fn insert_calls_pg(
    pool: &sea_orm::sqlx::PgPool,
    rows: &[&call::Model],
) -> Result<Vec<(i64, String)>, EngineError> {
    use sea_orm::sqlx;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<[Arg<'_>; CALL_WIDTH]> = rows.iter().map(|r| call_args(r)).collect();
    // The same text every time: the arrays' types follow `call_args`, the same for every row.
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let arrays: Vec<String> = args[0]
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let kind = match a {
                    Arg::Int(_) => "int8",
                    Arg::Real(_) => "float8",
                    Arg::Text(_) => "text",
                    Arg::Time(_) => "timestamptz",
                    Arg::Flag(_) => "bool",
                };
                format!("${}::{kind}[]", k + 1)
            })
            .collect();
        format!(
            "INSERT INTO calls ({CALL_WRITTEN_COLUMNS}) SELECT * FROM unnest({}) \
             ON CONFLICT (tenant_id, call_id) DO NOTHING RETURNING tenant_id, call_id",
            arrays.join(", ")
        )
    });
    let mut query = sqlx::query_as::<_, (i64, String)>(sql.as_str());
    for k in 0..CALL_WIDTH {
        let column = args.iter().map(|row| &row[k]);
        query = match &args[0][k] {
            Arg::Int(_) => query.bind(column.map(Arg::int).collect::<Result<Vec<_>, _>>()?),
            Arg::Real(_) => query.bind(column.map(Arg::real).collect::<Result<Vec<_>, _>>()?),
            Arg::Text(_) => query.bind(column.map(Arg::text).collect::<Result<Vec<_>, _>>()?),
            Arg::Time(_) => query.bind(column.map(Arg::time).collect::<Result<Vec<_>, _>>()?),
            Arg::Flag(_) => query.bind(column.map(Arg::flag).collect::<Result<Vec<_>, _>>()?),
        };
    }
    query.fetch_all(pool).await.map_err(super::import::sqlx_err)
}

/// The columns of [`CALL_WRITTEN_COLUMNS`] an end sets: on a call row that exists (its start
/// or an earlier end wrote it) only these change, so a start that raced in keeps its match.
const CALL_END_COLUMNS: [&str; 12] = [
    "ani",
    "ani_withheld",
    "dnis",
    "external_ids",
    "customer_id",
    "status",
    "intent",
    "intent_status",
    "summary",
    "variables",
    "ended_at",
    "updated_at",
];

/// What a call's row that exists already becomes at its end: only [`CALL_END_COLUMNS`] change.
pub(super) fn call_ended() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let set: Vec<String> = CALL_END_COLUMNS
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "ON CONFLICT (tenant_id, call_id) DO UPDATE SET {}",
            set.join(", ")
        )
    });
    &SQL
}

/// The write of an ended call's row (run by [`Conn::execute_together`]): inserted whole when the end comes first, else only
/// [`CALL_END_COLUMNS`] change.
pub(super) fn ended_call(row: &call::Model) -> Write<'_> {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT INTO calls ({CALL_WRITTEN_COLUMNS}) VALUES {} {}",
            placeholders(1, CALL_WIDTH, false),
            call_ended()
        )
    });
    Write {
        sql: SQL.as_str().into(),
        args: call_args(row).to_vec(),
    }
}

fn insert_calls_sql(rows: usize) -> String {
    format!(
        "INSERT INTO calls ({CALL_WRITTEN_COLUMNS}) VALUES {} \
         ON CONFLICT (tenant_id, call_id) DO NOTHING RETURNING tenant_id, call_id",
        placeholders(rows, CALL_WIDTH, false)
    )
}

pub(super) fn call_from_row(r: &dyn Row) -> Result<call::Model, EngineError> {
    Ok(call::Model {
        id: r.int_req(0)?,
        tenant_id: r.int_req(1)?,
        call_id: r.text_req(2)?,
        platform: r.text_req(3)?,
        ani: r.text(4)?,
        ani_withheld: r.flag(5)?,
        dnis: r.text(6)?,
        external_ids: r.text_req(7)?,
        matched_customer_id: r.int(8)?,
        confidence: r.real(9)?,
        band: r.text(10)?,
        recommended_action: r.text(11)?,
        signals: r.text_req(12)?,
        candidates: r.text_req(13)?,
        customer_id: r.int(14)?,
        status: r.text_req(15)?,
        intent: r.text(16)?,
        intent_status: r.text(17)?,
        summary: r.text(18)?,
        variables: r.text_req(19)?,
        started_at: r.time(20)?,
        ended_at: r.time(21)?,
        created_at: r.time_req(22)?,
        updated_at: r.time_req(23)?,
    })
}

/// The columns of `customers`, in [`customer::Model`]'s order.
pub(super) const CUSTOMER_COLUMNS: &str = "id, tenant_id, customer_ref, provisional, call_count, \
    first_seen_at, last_seen_at, created_at, updated_at";

pub(super) fn customer_from_row(r: &dyn Row) -> Result<customer::Model, EngineError> {
    Ok(customer::Model {
        id: r.int_req(0)?,
        tenant_id: r.int_req(1)?,
        customer_ref: r.text_req(2)?,
        provisional: r.flag(3)?,
        call_count: r.int_req(4)?,
        first_seen_at: r.time(5)?,
        last_seen_at: r.time(6)?,
        created_at: r.time_req(7)?,
        updated_at: r.time_req(8)?,
    })
}

pub(super) async fn find_call(
    c: Conn<'_>,
    tenant: TenantId,
    call_id: &str,
) -> Result<Option<call::Model>, EngineError> {
    c.query_one(
        &format!("SELECT {CALL_COLUMNS} FROM calls WHERE tenant_id = $1 AND call_id = $2"),
        &[tenant.0.into(), call_id.into()],
        call_from_row,
    )
    .await
}

pub(super) async fn find_customer_by_ref(
    c: Conn<'_>,
    tenant: TenantId,
    customer_ref: &str,
) -> Result<Option<customer::Model>, EngineError> {
    customer_by_ref(c, tenant, customer_ref, "").await
}

/// [`find_customer_by_ref`], the row locked until the commit (PostgreSQL).
pub(super) async fn lock_customer_by_ref(
    c: Conn<'_>,
    tenant: TenantId,
    customer_ref: &str,
) -> Result<Option<customer::Model>, EngineError> {
    customer_by_ref(c, tenant, customer_ref, " FOR NO KEY UPDATE").await
}

async fn customer_by_ref(
    c: Conn<'_>,
    tenant: TenantId,
    customer_ref: &str,
    locking: &str,
) -> Result<Option<customer::Model>, EngineError> {
    c.query_one(
        &format!(
            "SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id = $1 AND customer_ref = $2\
             {locking}"
        ),
        &[tenant.0.into(), customer_ref.into()],
        customer_from_row,
    )
    .await
}

/// One customer of the tenant by storage id.
pub(super) async fn find_customer(
    c: Conn<'_>,
    tenant: TenantId,
    id: i64,
) -> Result<Option<customer::Model>, EngineError> {
    c.query_one(
        &format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1 AND tenant_id = $2"),
        &[id.into(), tenant.0.into()],
        customer_from_row,
    )
    .await
}

/// Customers by storage id, for turning scores into references.
pub(super) async fn customers_by_id(
    c: Conn<'_>,
    tenant: TenantId,
    ids: impl IntoIterator<Item = i64>,
) -> Result<HashMap<i64, customer::Model>, EngineError> {
    let mut ids: Vec<i64> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let args: Vec<Arg<'_>> = std::iter::once(tenant.0.into())
        .chain(ids.iter().map(|&id| id.into()))
        .collect();
    Ok(
        c.query(&customers_by_id_sql(ids.len()), &args, customer_from_row)
            .await?
            .into_iter()
            .map(|m| (m.id, m))
            .collect(),
    )
}

/// The read of [`customers_by_id`] for `n` ids (`$2`...), the tenant `$1`. By id: the tenant is
/// checked on the rows found, as `tenant_id + 0`, which no index serves. Given `tenant_id = $1`,
/// SQLite (without statistics) would walk all the tenant's customers along the index on
/// their references from four ids up.
fn customers_by_id_sql(n: usize) -> String {
    let list = (2..n + 2)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE tenant_id + 0 = $1 AND id IN ({list})")
}

/// An identity as the index stores it: (`ani` | `external_id`, value).
pub(super) type IdentityKey = (&'static str, String);

/// The identity keys of a call's hints: its usable number and its external ids.
pub(super) fn identity_keys(ani: Option<&Ani>, external_ids: &[ExternalId]) -> Vec<IdentityKey> {
    ani.and_then(Ani::number)
        .map(|n| (identity::KIND_ANI, n.as_str().to_owned()))
        .into_iter()
        .chain(
            external_ids
                .iter()
                .map(|e| (identity::KIND_EXTERNAL, e.pair())),
        )
        .collect()
}

/// The customers linked to each key: one statement over the identity index (one indexed
/// select per key, joined by `UNION ALL`).
pub(super) async fn load_links(
    c: Conn<'_>,
    tenant: TenantId,
    keys: &[IdentityKey],
) -> Result<HashMap<IdentityKey, Vec<IdentityLink>>, EngineError> {
    if keys.is_empty() {
        return Ok(links_by_key(keys, Vec::new()));
    }
    let mut args: Vec<Arg<'_>> = vec![tenant.0.into()];
    let sql = links_union(keys, &mut args);
    let rows = c.query(&sql, &args, |r| link_of(r)).await?;
    Ok(links_by_key(keys, rows))
}

/// Customers' stored documents (bodies) by id, read with their links.
pub(super) type Bodies = HashMap<i64, String>;

/// A start's identity links, and the stored documents of the customers linked (few of them).
pub(super) type LinksAndBodies = (HashMap<IdentityKey, Vec<IdentityLink>>, Bodies);

/// Linked customers at most for whom [`load_links_and_bodies_pg`] reads documents too: a start
/// answers with one customer's, and a number shared by many would read them all.
const BODIES_UP_TO: i64 = 4;

/// The links of several starts' keys (each start's `(tenant, keys)`, in order) and, in the same
/// statement, the stored documents of the customers linked to each start (when at most
/// [`BODIES_UP_TO`]): one round trip for a batch of starts that find neither in the caches
/// (`batch::LinkReader` gathers them). PostgreSQL only: the keys are bound as arrays
/// (`unnest`), so the statement's text never changes.
pub(super) async fn load_links_and_bodies_pg(
    pool: &sea_orm::sqlx::PgPool,
    starts: &[(TenantId, &[IdentityKey])],
) -> Result<Vec<LinksAndBodies>, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::{self, Row as _};
    let mut start_of = Vec::new();
    let mut tenants = Vec::new();
    let mut positions = Vec::new();
    let mut kinds = Vec::new();
    let mut values = Vec::new();
    for (s, (tenant, keys)) in starts.iter().enumerate() {
        for (k, (kind, value)) in keys.iter().enumerate() {
            start_of.push(i64::try_from(s).unwrap_or(i64::MAX));
            tenants.push(tenant.0);
            positions.push(i64::try_from(k).unwrap_or(i64::MAX));
            kinds.push(*kind);
            values.push(value.as_str());
        }
    }
    let mut out: Vec<(Vec<(i64, IdentityLink)>, Bodies)> =
        starts.iter().map(|_| (Vec::new(), Bodies::new())).collect();
    if !kinds.is_empty() {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT l.s, l.k, l.customer_id, l.call_count, l.last_seen_at, d.body FROM \
                 (SELECT i.s, i.tenant, i.k, x.customer_id, x.call_count, x.last_seen_at, \
                   COUNT(*) OVER (PARTITION BY i.s) AS n \
                  FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::text[], $5::text[]) \
                    AS i(s, tenant, k, kind, value) \
                  JOIN identities x \
                    ON x.tenant_id = i.tenant AND x.kind = i.kind AND x.value = i.value) l \
                 LEFT JOIN LATERAL (SELECT body FROM customer_contexts \
                   WHERE customer_id = l.customer_id AND tenant_id = l.tenant AND format = $6 \
                   AND l.n <= {BODIES_UP_TO}) d ON true"
            )
        });
        let rows = sqlx::query(SQL.as_str())
            .bind(&start_of)
            .bind(&tenants)
            .bind(&positions)
            .bind(&kinds)
            .bind(&values)
            .bind(super::context::FORMAT)
            .fetch_all(pool)
            .await?;
        for row in rows {
            let s: i64 = row.try_get(0)?;
            let Some((links, bodies)) = usize::try_from(s).ok().and_then(|s| out.get_mut(s)) else {
                continue;
            };
            let link = IdentityLink {
                customer: row.try_get(2)?,
                call_count: u32::try_from(row.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
                last_seen_at: row.try_get(4)?,
            };
            if let Some(body) = row.try_get::<Option<String>, _>(5)? {
                bodies.insert(link.customer, body);
            }
            links.push((row.try_get(1)?, link));
        }
    }
    Ok(out
        .into_iter()
        .zip(starts)
        .map(|((links, bodies), (_, keys))| (links_by_key(keys, links), bodies))
        .collect())
}

/// The identity index's select for `keys` (the tenant is `$1`; the keys' parameters are
/// appended to `args`): the key's position, customer, call count, last seen.
fn links_union<'a>(keys: &'a [IdentityKey], args: &mut Vec<Arg<'a>>) -> String {
    let mut selects = Vec::with_capacity(keys.len());
    for (i, (kind, value)) in keys.iter().enumerate() {
        let n = args.len();
        selects.push(format!(
            "SELECT CAST({i} AS BIGINT) AS k, customer_id, call_count, last_seen_at \
             FROM identities WHERE tenant_id = $1 AND kind = ${} AND value = ${}",
            n + 1,
            n + 2
        ));
        args.push((*kind).into());
        args.push(value.as_str().into());
    }
    selects.join(" UNION ALL ")
}

/// A row of [`links_union`].
fn link_of(r: &dyn Row) -> Result<(i64, IdentityLink), EngineError> {
    Ok((
        r.int_req(0)?,
        IdentityLink {
            customer: r.int_req(1)?,
            call_count: u32::try_from(r.int_req(2)?).unwrap_or(u32::MAX),
            last_seen_at: r.time_req(3)?,
        },
    ))
}

/// Links by key (every key present, with no links when none was read).
fn links_by_key(
    keys: &[IdentityKey],
    rows: Vec<(i64, IdentityLink)>,
) -> HashMap<IdentityKey, Vec<IdentityLink>> {
    let mut out: HashMap<IdentityKey, Vec<IdentityLink>> =
        keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    for (i, link) in rows {
        if let Some(k) = usize::try_from(i).ok().and_then(|i| keys.get(i)) {
            out.entry(k.clone()).or_default().push(link);
        }
    }
    out
}

/// The scorer's view of a call's hints, from the links of their keys.
pub(super) fn evidence(
    ani: Option<&Ani>,
    external_ids: &[ExternalId],
    links: &HashMap<IdentityKey, Vec<IdentityLink>>,
) -> Evidence {
    let get =
        |kind: &'static str, value: String| links.get(&(kind, value)).cloned().unwrap_or_default();
    let ani = match ani {
        None => AniEvidence::NotGiven,
        Some(Ani::Withheld(reason)) => AniEvidence::Withheld(reason.describe()),
        Some(Ani::Number(n)) => AniEvidence::Number(get(identity::KIND_ANI, n.as_str().to_owned())),
    };
    let external = external_ids
        .iter()
        .map(|id| ExternalEvidence {
            name: id.name().to_owned(),
            links: get(identity::KIND_EXTERNAL, id.pair()),
        })
        .collect();
    Evidence {
        ani,
        external,
        attestation: None,
    }
}

/// Evidence straight from the database (inside a write transaction).
pub(super) async fn load_evidence(
    c: Conn<'_>,
    tenant: TenantId,
    ani: Option<&Ani>,
    external_ids: &[ExternalId],
) -> Result<Evidence, EngineError> {
    let links = load_links(c, tenant, &identity_keys(ani, external_ids)).await?;
    Ok(evidence(ani, external_ids, &links))
}

pub(super) fn parse_variables(text: &str) -> Result<BTreeMap<String, Value>, EngineError> {
    Ok(serde_json::from_str(text)?)
}

/// Variables, open intents and recent calls of one customer, in one round trip: three
/// indexed selects joined by `UNION ALL` into rows of one shape (`kind`, two texts, two
/// more texts, two times, the row id). One statement instead of three matters: each
/// statement is a hand-off to the database driver's thread, which costs more than the reads.
/// Also returns when the first open intent was last touched.
pub(super) async fn load_context(
    c: Conn<'_>,
    customer: &customer::Model,
) -> Result<(CustomerContext, Option<DateTime<Utc>>), EngineError> {
    let sql = format!(
        "SELECT 'v' AS kind, name AS a, value AS b, NULL AS c, NULL AS d, updated_at AS t1, expires_at AS t2, id AS n, NULL AS t3 \
         FROM variables WHERE customer_id = $1 \
         UNION ALL SELECT * FROM (SELECT 'i', intent, last_call_id, NULL, NULL, opened_at, updated_at, id, due_at \
           FROM intents WHERE customer_id = $1 AND status = 'open' \
           ORDER BY updated_at DESC, id ASC LIMIT {OPEN_INTENTS}) AS i \
         UNION ALL SELECT * FROM (SELECT 'c', call_id, summary, intent, intent_status, started_at, ended_at, id, CAST(NULL AS TIMESTAMPTZ) \
           FROM calls WHERE customer_id = $1 AND status = '{}' \
           ORDER BY ended_at DESC, id DESC LIMIT {RECENT_CALLS}) AS k",
        call::STATUS_ENDED,
    );
    enum Part {
        Variable(String, Value, Option<DateTime<Utc>>),
        Intent(Option<DateTime<Utc>>, i64, OpenIntent),
        Call(Option<DateTime<Utc>>, i64, RecentCall),
    }
    let rows = c
        .query(&sql, &[customer.id.into()], |r| {
            let kind = r.text_req(0)?;
            let a = r.text(1)?;
            let b = r.text(2)?;
            let t1 = r.time(5)?;
            let t2 = r.time(6)?;
            let n = r.int_req(7)?;
            Ok(match kind.as_str() {
                "v" => Part::Variable(
                    a.unwrap_or_default(),
                    serde_json::from_str(b.as_deref().unwrap_or("null"))?,
                    t2,
                ),
                "i" => Part::Intent(
                    t2,
                    n,
                    OpenIntent {
                        intent: a.unwrap_or_default(),
                        opened_at: t1.unwrap_or_else(crate::now),
                        last_call_id: b,
                        due_at: r.time(8)?,
                        state: None,
                    },
                ),
                _ => Part::Call(
                    t2,
                    n,
                    RecentCall {
                        call_id: a.unwrap_or_default(),
                        summary: b,
                        intent: r.text(3)?,
                        intent_status: r.text(4)?,
                        started_at: t1,
                        ended_at: t2,
                    },
                ),
            })
        })
        .await?;
    let mut variables = BTreeMap::new();
    let mut variable_expiry = BTreeMap::new();
    let mut intents = Vec::new();
    let mut calls = Vec::new();
    for part in rows {
        match part {
            Part::Variable(name, value, expires_at) => {
                if let Some(at) = expires_at {
                    variable_expiry.insert(name.clone(), at);
                }
                variables.insert(name, value);
            }
            Part::Intent(t, n, i) => intents.push((t, n, i)),
            Part::Call(t, n, k) => calls.push((t, n, k)),
        }
    }
    // UNION ALL keeps no order across its parts: restore each part's.
    intents.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    calls.sort_by(|x, y| y.0.cmp(&x.0).then(y.1.cmp(&x.1)));
    let newest_open_intent = intents.first().and_then(|(t, _, _)| *t);
    let context = CustomerContext {
        variables,
        open_intents: intents.into_iter().map(|(_, _, i)| i).collect(),
        variable_expiry,
        recent_calls: calls.into_iter().map(|(_, _, k)| k).collect(),
        call_count: customer.call_count,
        first_seen_at: customer.first_seen_at,
        last_seen_at: customer.last_seen_at,
    };
    Ok((context, newest_open_intent))
}

/// A customer's open intents as a context shows them (the same order and limit as
/// [`load_context`]).
pub(super) async fn load_open_intents(
    c: Conn<'_>,
    customer_id: i64,
) -> Result<(Vec<OpenIntent>, Option<DateTime<Utc>>), EngineError> {
    let rows = c
        .query(
            &format!(
                "SELECT intent, last_call_id, opened_at, updated_at, due_at FROM intents \
             WHERE customer_id = $1 AND status = 'open' \
             ORDER BY updated_at DESC, id ASC LIMIT {OPEN_INTENTS}"
            ),
            &[customer_id.into()],
            |r| {
                Ok((
                    OpenIntent {
                        intent: r.text_req(0)?,
                        last_call_id: r.text(1)?,
                        opened_at: r.time(2)?.unwrap_or_else(crate::now),
                        due_at: r.time(4)?,
                        state: None,
                    },
                    r.time(3)?,
                ))
            },
        )
        .await?;
    let newest = rows.first().and_then(|(_, t)| *t);
    Ok((rows.into_iter().map(|(i, _)| i).collect(), newest))
}

/// A stored call with its customer references resolved.
pub(super) async fn call_record(
    c: Conn<'_>,
    tenant: TenantId,
    row: call::Model,
) -> Result<CallRecord, EngineError> {
    let refs = customers_by_id(
        c,
        tenant,
        row.matched_customer_id.into_iter().chain(row.customer_id),
    )
    .await?;
    record_of(row, &refs)
}

/// A stored call as the API shows it, given its customers (the matched and the linked one) by
/// id: a customer missing from `refs` (erased) is shown as none.
pub(super) fn record_of(
    row: call::Model,
    refs: &HashMap<i64, customer::Model>,
) -> Result<CallRecord, EngineError> {
    let reference = |id: Option<i64>| {
        id.and_then(|id| refs.get(&id))
            .map(|m| m.customer_ref.clone())
    };
    Ok(CallRecord {
        matched_customer_ref: reference(row.matched_customer_id),
        customer_ref: reference(row.customer_id),
        external_ids: serde_json::from_str(&row.external_ids)?,
        variables: parse_variables(&row.variables)?,
        call_id: row.call_id,
        platform: row.platform,
        status: row.status,
        ani: row.ani,
        ani_withheld: row.ani_withheld,
        dnis: row.dnis,
        confidence: row.confidence,
        band: row.band,
        intent: row.intent,
        intent_status: row.intent_status,
        summary: row.summary,
        started_at: row.started_at,
        ended_at: row.ended_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Customers are read by id, whatever the number of ids, not by walking the tenant's.
    #[tokio::test]
    async fn customers_are_read_by_id() {
        for n in [1, 4, 10, 500] {
            let values: Vec<sea_orm::Value> =
                (0..=i64::try_from(n).unwrap()).map(Into::into).collect();
            let statement = sea_orm::Statement::from_sql_and_values(
                sea_orm::DbBackend::Sqlite,
                customers_by_id_sql(n),
                values,
            );
            let plan = super::super::sqlite_plan(statement).await;
            assert!(plan.contains("INTEGER PRIMARY KEY"), "{n} ids: {plan}");
        }
    }

    #[test]
    fn the_call_columns_are_listed_once_and_agree() {
        let written: Vec<&str> = CALL_WRITTEN_COLUMNS.split(", ").collect();
        assert_eq!(written.len(), CALL_WIDTH);
        for column in CALL_END_COLUMNS {
            assert!(written.contains(&column), "{column} is a written column");
        }
        assert_eq!(CALL_COLUMNS, format!("id, {CALL_WRITTEN_COLUMNS}"));
    }
}
