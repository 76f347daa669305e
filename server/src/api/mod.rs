//! The REST API (poem-openapi): one file per resource, one tag enum, one error type.

pub mod agent;
pub mod audit;
pub mod billing;
pub mod calls;
pub mod connectors;
pub mod contract;
pub mod customers;
pub mod keys;
pub mod settings;
pub mod shared;

use std::sync::Arc;

use poem_openapi::{OpenApiService, Tags};

use crate::state::AppState;

/// Groups of operations in the API document.
#[derive(Tags)]
pub enum ApiTags {
    /// Call start and end: who is calling, and what to remember.
    Calls,
    /// Customers outside a call: look-up, export, erasure, corrections.
    Customers,
    /// API keys of the calling tenant.
    ApiKeys,
    /// Settings of platform connectors (the webhooks themselves take native payloads).
    Connectors,
    /// The tenant's settings of memory: sensitive variables, retention.
    Settings,
    /// For AI-agent builders: system prompts and tool definitions.
    Agent,
    /// The tenant's administrative actions.
    Audit,
    /// The tenant's plan, usage and billing events.
    Billing,
}

/// The API description shown at `/docs` and served at `/openapi.json`.
pub const DESCRIPTION: &str = include_str!("description.md");

/// Every resource of the API, in the order of the document.
pub type Resources = (
    calls::CallsApi,
    customers::CustomersApi,
    keys::KeysApi,
    connectors::ConnectorsApi,
    settings::SettingsApi,
    agent::AgentApi,
    audit::AuditApi,
    billing::BillingApi,
);

/// Builds the OpenAPI service over all resources.
pub fn service(state: Arc<AppState>) -> OpenApiService<Resources, ()> {
    OpenApiService::new(
        (
            calls::CallsApi {
                state: state.clone(),
            },
            customers::CustomersApi {
                state: state.clone(),
            },
            keys::KeysApi {
                state: state.clone(),
            },
            connectors::ConnectorsApi {
                state: state.clone(),
            },
            settings::SettingsApi {
                state: state.clone(),
            },
            agent::AgentApi {
                state: state.clone(),
            },
            audit::AuditApi {
                state: state.clone(),
            },
            billing::BillingApi { state },
        ),
        "Sticky Calls",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}
