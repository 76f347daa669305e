//! The Sticky Calls HTTP server: poem + poem-openapi over the `sticky-core` engine.
//!
//! `startup` builds the application, `api` holds one file per resource, `json` the strict
//! body parser, `error` the one error body, `middleware` request ids and access logs.

pub mod api;
pub mod auth;
pub mod backup;
pub mod coherence;
pub mod connectors;
pub mod error;
pub mod json;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod middleware;
pub mod postman;
pub mod settings;
pub mod startup;
pub mod state;
pub mod stripe;
pub mod tls;
pub mod transfer;

pub use settings::Settings;
pub use startup::Application;
