//! Domain types: parsed once at the boundary, valid wherever they are held.

mod attestation;
mod ids;
mod phone;

pub use attestation::Attestation;

pub use ids::{
    CallId, CustomerRef, ExternalId, IntentName, IntentStatus, InvalidValue, Platform,
    VariableName, parse_due_at,
};
pub use phone::{Ani, DefaultRegion, PhoneNumber, WithheldReason};
