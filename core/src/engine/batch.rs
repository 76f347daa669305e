//! Group commit for call starts on sea-orm's pool (PostgreSQL; SQLite files use the writer
//! thread of `lite.rs` instead): every start writes one call row, and on a single-writer
//! database one `INSERT` per request caps throughput at one write's latency. Starts hand their
//! row to one writer task, which inserts whatever is waiting as one multi-row
//! `INSERT ... ON CONFLICT DO NOTHING RETURNING` and tells each start whether its row went in
//! (if not, its call id already existed: a retry, or an end that came first). A batch holds at
//! most one row per call id, so that answer is never ambiguous. Each row is committed before
//! its start is answered.

use std::collections::HashSet;
use std::sync::Arc;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryTrait,
};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::entities::call;
use crate::error::EngineError;

/// Rows per batch at most.
const MAX_BATCH: usize = 256;

struct Pending {
    key: (i64, String),
    row: call::ActiveModel,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// The handle starts use to insert their call row.
pub(super) struct CallWriter {
    queue: mpsc::UnboundedSender<Pending>,
}

async fn insert_batch(
    db: &DatabaseConnection,
    rows: Vec<call::ActiveModel>,
) -> Result<HashSet<(i64, String)>, DbErr> {
    let mut stmt = call::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([call::Column::TenantId, call::Column::CallId])
                .do_nothing()
                .to_owned(),
        )
        .into_query();
    stmt.returning(
        sea_orm::sea_query::Query::returning()
            .columns([call::Column::TenantId, call::Column::CallId]),
    );
    let backend = db.get_database_backend();
    let inserted = db.query_all_raw(backend.build(&stmt)).await?;
    inserted
        .iter()
        .map(|r| {
            Ok((
                r.try_get_by_index::<i64>(0)?,
                r.try_get_by_index::<String>(1)?,
            ))
        })
        .collect()
}

impl CallWriter {
    /// Starts the writer task on the current tokio runtime. `writes` is the engine's writer
    /// lock: batches never interleave with an end's transaction.
    pub(super) fn spawn(db: DatabaseConnection, writes: Arc<Mutex<()>>) -> Self {
        let (queue, mut rx) = mpsc::unbounded_channel::<Pending>();
        tokio::spawn(async move {
            let mut deferred: Vec<Pending> = Vec::new();
            loop {
                let mut waiting = std::mem::take(&mut deferred);
                if waiting.is_empty() {
                    match rx.recv().await {
                        Some(p) => waiting.push(p),
                        None => break,
                    }
                }
                while waiting.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => waiting.push(p),
                        Err(_) => break,
                    }
                }
                let mut seen = HashSet::new();
                let mut batch = Vec::with_capacity(waiting.len());
                for p in waiting {
                    if seen.insert(p.key.clone()) {
                        batch.push(p);
                    } else {
                        deferred.push(p);
                    }
                }
                let rows = batch.iter().map(|p| p.row.clone()).collect();
                let result = {
                    let _writer = writes.lock().await;
                    insert_batch(&db, rows).await
                };
                match result {
                    Ok(inserted) => {
                        for p in batch {
                            let _ = p.reply.send(Ok(inserted.contains(&p.key)));
                        }
                    }
                    Err(e) if batch.len() > 1 => {
                        // One bad row must not fail the others (of any tenant): retry alone.
                        tracing::warn!(error = %e, rows = batch.len(), "call insert batch failed; retrying row by row");
                        for p in batch {
                            let result = {
                                let _writer = writes.lock().await;
                                insert_batch(&db, vec![p.row.clone()]).await
                            };
                            let _ = p.reply.send(
                                result
                                    .map(|inserted| inserted.contains(&p.key))
                                    .map_err(|e| e.to_string()),
                            );
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "call insert failed");
                        for p in batch {
                            let _ = p.reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Inserts a call row unless its call id exists; `true` when it was inserted.
    pub(super) async fn insert(&self, row: &call::Model) -> Result<bool, EngineError> {
        let (reply, answer) = oneshot::channel();
        let mut active = call::ActiveModel::from(row.clone()).reset_all();
        active.id = ActiveValue::NotSet;
        self.queue
            .send(Pending {
                key: (row.tenant_id, row.call_id.clone()),
                row: active,
                reply,
            })
            .map_err(|_| EngineError::Corrupt("the call writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| EngineError::Corrupt("the call writer has stopped".into()))?
            .map_err(|e| EngineError::Database(DbErr::Custom(e)))
    }
}
