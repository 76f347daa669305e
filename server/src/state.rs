//! What every handler shares.

use sticky_core::Engine;
use sticky_core::connector::Connector;
use sticky_core::keys::KeyStore;
use sticky_core::secrets::SecretStore;

/// The engine and the key store, behind one `Arc`.
pub struct AppState {
    /// Call memory.
    pub engine: Engine,
    /// Tenants and API keys.
    pub keys: KeyStore,
    /// Encrypted platform secrets.
    pub secrets: SecretStore,
    /// The connectors served (see `connectors::registry`).
    pub connectors: Vec<Box<dyn Connector>>,
    /// Public base URL platforms call us at, when behind a proxy.
    pub public_base_url: Option<String>,
}
