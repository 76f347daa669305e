//! sea-orm entities, one per table created by the `sticky-migrations` crate. Relations are left
//! out on purpose: the engine writes its few joins as explicit queries, which keeps every query
//! on the hot path visible in `engine/`.

pub mod api_key;
pub mod audit_event;
pub mod call;
pub mod connector_setting;
pub mod customer;
pub mod customer_context;
pub mod identity;
pub mod intent;
pub mod tenant;
pub mod tenant_setting;
pub mod variable;
