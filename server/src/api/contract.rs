//! What poem-openapi cannot declare, added to the API document it generates: request bodies
//! that refuse unknown fields (`additionalProperties: false`, as their `deny_unknown_fields`
//! parsers do), the unlink body's "exactly one of `ani` or `external_id`", the names allowed
//! in `sensitive_variables`, and the connector-settings body. Every consumer of the document
//! (`/openapi.json`, the agent tools, MCP, the Postman collection) reads it through
//! [`document`], so that what it declares is what the server enforces.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::state::AppState;

/// Request bodies parsed with `deny_unknown_fields`.
const CLOSED: &[&str] = &[
    "StartCallRequest",
    "IdentityHintsDto",
    "EndCallRequest",
    "UnlinkRequest",
    "CreateKeyRequest",
    "SettingsDto",
    "SignupRequest",
];

/// A variable's name: 1 to 64 of `A-Za-z0-9_.-`.
const VARIABLE_NAME: &str = "^[A-Za-z0-9_.-]+$";
/// An external id, `name:value`.
const EXTERNAL_ID: &str = "^[A-Za-z0-9_.-]{1,64}:[^\\x00-\\x1F\\x7F-\\x9F]{1,256}$";
/// A Twilio auth token.
const TWILIO_TOKEN: &str = "^[A-Za-z0-9]{16,128}$";

/// No control characters (`char::is_control`: Unicode Cc).
const NO_CONTROL: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
/// A summary: control characters other than tab and line breaks refused.
const SUMMARY: &str = "^[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$";
/// A customer reference.
const CUSTOMER_REF: &str = "^[A-Za-z0-9_.:@+-]+$";
/// An intent's name.
const INTENT: &str = "^[A-Za-z0-9_.:-]+$";
/// A platform's slug.
const PLATFORM: &str = "^[a-z0-9_-]+$";
/// A tenant's name (`sticky_core::keys::parse_tenant_name`).
const TENANT_NAME: &str = "^[a-z0-9_-]+$";
/// A map key that names a variable or an external id: 1 to 64 of `A-Za-z0-9_.-`.
const KEY: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// Merges `extra` into the schema at `pointer`.
fn add(doc: &mut Value, pointer: &str, extra: Value) {
    if let Some(Value::Object(schema)) = doc.pointer_mut(pointer)
        && let Value::Object(extra) = extra
    {
        schema.extend(extra);
    }
}

/// The API document as served.
pub fn document(state: Arc<AppState>) -> Value {
    let mut doc: Value = serde_json::from_str(&super::service(state).spec()).unwrap_or_default();
    tighten(&mut doc);
    doc
}

/// Adds what poem-openapi cannot say (see the module documentation).
pub fn tighten(doc: &mut Value) {
    for name in CLOSED {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}"))
            && let Some(obj) = schema.as_object_mut()
        {
            obj.insert("additionalProperties".into(), json!(false));
        }
    }
    let props =
        |schema: &str, field: &str| format!("/components/schemas/{schema}/properties/{field}");
    let call_id = json!({"minLength": 1, "maxLength": 128, "pattern": NO_CONTROL});
    let platform = json!({"minLength": 1, "maxLength": 32, "pattern": PLATFORM});
    for schema in ["StartCallRequest", "EndCallRequest"] {
        add(doc, &props(schema, "call_id"), call_id.clone());
        add(doc, &props(schema, "platform"), platform.clone());
    }
    add(
        doc,
        &props("EndCallRequest", "customer_ref"),
        json!({"minLength": 1, "maxLength": 128, "pattern": CUSTOMER_REF}),
    );
    add(
        doc,
        &props("EndCallRequest", "intent"),
        json!({"minLength": 1, "maxLength": 128, "pattern": INTENT}),
    );
    add(
        doc,
        &props("EndCallRequest", "intent_status"),
        json!({"enum": ["open", "resolved", null]}),
    );
    add(
        doc,
        &props("EndCallRequest", "intent_due_at"),
        json!({"format": "date-time"}),
    );
    add(
        doc,
        &props("EndCallRequest", "summary"),
        json!({"maxLength": 8192, "pattern": SUMMARY}),
    );
    add(
        doc,
        &props("EndCallRequest", "variables"),
        json!({
            "maxProperties": 100, "additionalProperties": false,
            "patternProperties": {KEY: {}},
        }),
    );
    add(
        doc,
        &props("EndCallRequest", "variable_ttl_seconds"),
        json!({
            "maxProperties": 100, "additionalProperties": false,
            "patternProperties": {KEY: {"type": "integer", "minimum": 1, "maximum": 315_360_000}},
        }),
    );
    add(
        doc,
        &props("IdentityHintsDto", "ani"),
        json!({"maxLength": 256}),
    );
    add(
        doc,
        &props("IdentityHintsDto", "dnis"),
        json!({"maxLength": 64, "pattern": NO_CONTROL}),
    );
    add(
        doc,
        &props("IdentityHintsDto", "external_ids"),
        json!({
            "maxProperties": 20, "additionalProperties": false,
            "patternProperties": {KEY: {"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_CONTROL}},
        }),
    );
    add(
        doc,
        &props("CreateKeyRequest", "label"),
        json!({"pattern": NO_CONTROL}),
    );
    add(
        doc,
        &props("SignupRequest", "name"),
        json!({"minLength": 1, "maxLength": 64, "pattern": TENANT_NAME}),
    );
    // A callback's due time is the due time of an intent given with it.
    add(
        doc,
        "/components/schemas/EndCallRequest",
        json!({"anyOf": [
            {"properties": {"intent_due_at": {"enum": [null]}}},
            {"required": ["intent"], "properties": {"intent": {"type": "string"}}},
        ]}),
    );
    if let Some(unlink) = doc.pointer_mut("/components/schemas/UnlinkRequest")
        && let Some(obj) = unlink.as_object_mut()
    {
        // Exactly one of the two, `null` counting as absent.
        let absent = json!({"nullable": true, "enum": [null]});
        obj.insert(
            "oneOf".into(),
            json!([
                {"required": ["ani"], "properties": {"ani": {"type": "string"}, "external_id": absent}},
                {"required": ["external_id"], "properties": {"external_id": {"type": "string", "pattern": EXTERNAL_ID}, "ani": absent}},
            ]),
        );
    }
    if let Some(list) =
        doc.pointer_mut("/components/schemas/SettingsDto/properties/sensitive_variables")
        && let Some(obj) = list.as_object_mut()
    {
        obj.insert("maxItems".into(), json!(100));
        obj.insert(
            "items".into(),
            json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": VARIABLE_NAME}),
        );
    }
    if let Some(op) = doc.pointer_mut("/paths/~1v1~1connectors~1{platform}~1settings/put") {
        if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
            for p in params {
                if p["name"] == "platform" {
                    p["schema"] = json!({"type": "string", "enum": ["twilio"]});
                }
            }
        }
        if let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema") {
            *schema = json!({
                "type": "object",
                "description": "Twilio: the account's auth token, and tokens of subaccounts by their SID.",
                "required": ["auth_token"],
                "additionalProperties": false,
                "properties": {
                    "auth_token": {"type": "string", "pattern": TWILIO_TOKEN},
                    "subaccount_tokens": {
                        "type": "object",
                        "additionalProperties": false,
                        "patternProperties": {
                            "^AC[0-9A-Fa-f]{32}$": {"type": "string", "pattern": TWILIO_TOKEN}
                        }
                    }
                }
            });
        }
    }
}
