//! What every handler shares.

use sticky_core::Engine;
use sticky_core::keys::KeyStore;

/// The engine and the key store, behind one `Arc`.
pub struct AppState {
    /// Call memory.
    pub engine: Engine,
    /// Tenants and API keys.
    pub keys: KeyStore,
}
