//! Hears the other processes on the same PostgreSQL database (see `sticky_core::coherence`):
//! a task holds one connection that `LISTEN`s on the channel and applies each change to this
//! process's caches. While that connection is down the identity and customer caches are off
//! and, when it is back, every cache (keys and secrets too) is emptied, so no notification
//! missed meanwhile leaves a stale entry.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::PgListener;
use sticky_core::coherence::{CHANNEL, Change};

use crate::state::AppState;

/// Starts listening when the database is PostgreSQL; the task ends with the process.
pub fn spawn(state: &Arc<AppState>) {
    let db = state.engine.db();
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = db.get_postgres_connection_pool().clone();
    // Until the first LISTEN holds, another process's write could go unheard.
    state.engine.set_coherent(false);
    let state = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let listening = match PgListener::connect_with(&pool).await {
                Ok(mut listener) => listener.listen(CHANNEL).await.is_ok().then_some(listener),
                Err(_) => None,
            };
            if let Some(mut listener) = listening {
                {
                    let Some(s) = state.upgrade() else { return };
                    forget_everything(&s);
                    s.engine.set_coherent(true);
                    drop(s);
                    tracing::info!("hearing other processes' cache changes");
                    pause = Duration::from_millis(100);
                    // `Ok(None)`: the connection was lost (messages may have been missed).
                    while let Ok(Some(n)) = listener.try_recv().await {
                        let Some(s) = state.upgrade() else { return };
                        if let Some(change) = Change::parse(n.payload()) {
                            apply(&s, &change).await;
                        }
                    }
                }
            }
            let Some(s) = state.upgrade() else { return };
            s.engine.set_coherent(false);
            forget_everything(&s);
            drop(s);
            tracing::warn!(
                retry_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "not hearing other processes' cache changes: caches off until listening again"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
}

fn forget_everything(state: &AppState) {
    state.keys.forget_all();
    state.secrets.forget_all();
}

async fn apply(state: &AppState, change: &Change) {
    // Keys and secrets are forgotten whoever changed them (a second time is harmless); the
    // engine skips its own changes.
    match change {
        Change::KeyRevoked { key_id, .. } => {
            if state.keys.forget_key(key_id).is_err() {
                state.keys.forget_all();
            }
        }
        Change::Secret {
            tenant, platform, ..
        } => state.secrets.forget(*tenant, platform).await,
        other => state.engine.apply_remote_change(other).await,
    }
}
