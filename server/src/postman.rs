//! `GET /postman.json`: a Postman collection (format 2.1) generated from the API's own OpenAPI
//! document, so it cannot drift from it: one request per operation, in a folder per tag, with
//! the server's address as `baseUrl`, the API key as the collection's bearer token
//! (`api_key`), path and query parameters, and example bodies built from the request schemas.
//!
//! Example values: a field or parameter known by name across the API (`call_id`, `ani`,
//! `customer_ref` ...) gets one consistent value, so that the requests run in order tell a
//! story (a call starts, ends, is read back, its customer looked up); otherwise the schema's
//! first enum value, else the first value its description quotes in backticks, else a value
//! of its type. Requests that delete come last in each folder. Every request carries tests:
//! no answer of 500 or more, and every JSON error body has an `error.code`; `newman run`
//! checks them against a live server in CI.

use std::sync::Arc;

use poem::web::{Data, Json};
use poem::{Request, handler};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// Values of the fields and parameters the API names alike everywhere.
const KNOWN: &[(&str, &str)] = &[
    ("call_id", "postman-call-1"),
    ("customer_ref", "postman-customer-1"),
    ("ani", "+14155550123"),
    ("dnis", "+18005550100"),
    ("intent", "refund_request"),
    ("intent_status", "open"),
    ("summary", "Asked about a refund for order 1234."),
    ("label", "postman"),
    ("external_id", "crm_id:crm-1"),
];

/// The tests every request runs (Postman's sandbox JavaScript).
const TESTS: &[&str] = &[
    "pm.test('no server error', function () { pm.expect(pm.response.code).to.be.below(500); });",
    "if (pm.response.code >= 400 && (pm.response.headers.get('Content-Type') || '').indexOf('json') >= 0) {",
    "  pm.test('the error names its code', function () { pm.expect(pm.response.json().error.code).to.be.a('string'); });",
    "}",
];

fn known(name: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// The first value `text` quotes in backticks.
fn quoted(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len]).filter(|q| !q.is_empty())
}

/// Replaces a `$ref` by the component it names (one level at a time).
fn resolve<'a>(schema: &'a Value, spec: &'a Value) -> &'a Value {
    match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/"))
    {
        Some(path) => spec
            .pointer(&format!("/{path}"))
            .map_or(schema, |s| resolve(s, spec)),
        None => match schema.get("allOf").and_then(Value::as_array) {
            Some(parts) if !parts.is_empty() => resolve(&parts[0], spec),
            _ => schema,
        },
    }
}

/// An example value for `schema`, named `name`.
fn example(name: &str, schema: &Value, spec: &Value, depth: usize) -> Value {
    let schema = resolve(schema, spec);
    if let Some(v) = known(name) {
        return Value::String(v.to_owned());
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") if depth < 4 => {
            let mut out = Map::new();
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            for (prop, sub) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                // The required fields, and those that make the example tell its story.
                let wanted = required.contains(&prop.as_str())
                    || known(prop).is_some()
                    || matches!(
                        resolve(sub, spec).get("properties"),
                        Some(p) if p.as_object().is_some_and(|p| p.keys().any(|k| known(k).is_some()))
                    );
                if wanted {
                    out.insert(prop.clone(), example(prop, sub, spec, depth + 1));
                }
            }
            Value::Object(out)
        }
        Some("array") => Value::Array(Vec::new()),
        Some("integer") => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(10)),
        Some("number") => json!(1.0),
        Some("boolean") => json!(true),
        Some("string") => Value::String(
            schema
                .get("description")
                .and_then(Value::as_str)
                .and_then(quoted)
                .unwrap_or("example")
                .to_owned(),
        ),
        _ => json!({}),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One Postman request item for an operation.
fn item(path: &str, method: &str, op: &Value, spec: &Value) -> Value {
    let params: Vec<&Value> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let value_of = |p: &Value| {
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut schema = p.get("schema").cloned().unwrap_or(Value::Null);
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), p.get("description")) {
            obj.entry("description").or_insert_with(|| d.clone());
        }
        text(&example(name, &schema, spec, 0))
    };
    let mut segments = Vec::new();
    let mut variables = Vec::new();
    for segment in path.trim_start_matches('/').split('/') {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                segments.push(format!(":{name}"));
                if let Some(p) = params
                    .iter()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                {
                    variables.push(json!({"key": name, "value": value_of(p),
                        "description": p.get("description").cloned().unwrap_or(Value::Null)}));
                }
            }
            None => segments.push(segment.to_owned()),
        }
    }
    let query: Vec<Value> = params
        .iter()
        .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
        .map(|p| {
            let required = p.get("required").and_then(Value::as_bool) == Some(true);
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            // Optional parameters are listed but off, unless the story needs them.
            let disabled = !required && known(name).is_none();
            json!({"key": name, "value": value_of(p), "disabled": disabled,
                   "description": p.get("description").cloned().unwrap_or(Value::Null)})
        })
        .collect();
    let enabled: Vec<String> = query
        .iter()
        .filter(|q| q["disabled"] != json!(true))
        .map(|q| format!("{}={}", text(&q["key"]), text(&q["value"])))
        .collect();
    let mut raw = format!("{{{{baseUrl}}}}/{}", segments.join("/"));
    if !enabled.is_empty() {
        raw.push('?');
        raw.push_str(&enabled.join("&"));
    }
    let mut request = json!({
        "method": method.to_ascii_uppercase(),
        "header": [],
        "url": {"raw": raw, "host": ["{{baseUrl}}"], "path": segments,
                "query": query, "variable": variables},
        "description": op.get("description").or_else(|| op.get("summary")).cloned().unwrap_or(Value::Null),
    });
    if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
        let body = example("", schema, spec, 0);
        request["header"] = json!([{"key": "Content-Type", "value": "application/json"}]);
        request["body"] = json!({
            "mode": "raw",
            "raw": serde_json::to_string_pretty(&body).unwrap_or_default(),
            "options": {"raw": {"language": "json"}},
        });
    }
    json!({
        "name": op.get("summary").or_else(|| op.get("operationId")).cloned().unwrap_or(Value::Null),
        "request": request,
        "event": [{"listen": "test", "script": {"type": "text/javascript", "exec": TESTS}}],
    })
}

/// The collection for the OpenAPI document `spec`, calling `base_url`.
pub fn collection(spec: &Value, base_url: &str) -> Value {
    // Folders in the order their first operation comes in the document (calls first).
    let mut folders: Vec<(String, Vec<(bool, Value)>)> = Vec::new();
    for (path, ops) in spec
        .get("paths")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        for (method, op) in ops.as_object().into_iter().flatten() {
            let tag = op
                .pointer("/tags/0")
                .and_then(Value::as_str)
                .unwrap_or("Other")
                .to_owned();
            let entry = (method == "delete", item(path, method, op, spec));
            match folders.iter_mut().find(|(n, _)| *n == tag) {
                Some((_, items)) => items.push(entry),
                None => folders.push((tag, vec![entry])),
            }
        }
    }
    let items: Vec<Value> = folders
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(name, mut items)| {
            // Stable: deletions last, the rest in the document's order.
            items.sort_by_key(|(delete, _)| *delete);
            json!({"name": name, "item": items.into_iter().map(|(_, i)| i).collect::<Vec<_>>()})
        })
        .collect();
    json!({
        "info": {
            "name": spec.pointer("/info/title").cloned().unwrap_or(json!("Sticky Calls")),
            "description": "Generated from the server's OpenAPI document (/openapi.json). Set the collection variable `api_key` to an API key.",
            "version": spec.pointer("/info/version").cloned().unwrap_or(Value::Null),
            "schema": "https://schema.getpostman.com/json/collection/v2.1.0/collection.json",
        },
        "auth": {"type": "bearer", "bearer": [{"key": "token", "value": "{{api_key}}", "type": "string"}]},
        "variable": [
            {"key": "baseUrl", "value": base_url.trim_end_matches('/')},
            {"key": "api_key", "value": ""},
        ],
        "item": items,
    })
}

/// `GET /postman.json`: the collection, calling this server at the address it was reached at
/// (or `STICKY_PUBLIC_BASE_URL`).
#[handler]
pub fn endpoint(state: Data<&Arc<AppState>>, req: &Request) -> Json<Value> {
    let spec: Value = crate::api::contract::document(state.clone());
    Json(collection(
        &spec,
        &crate::connectors::public_base(&state, req),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        json!({
            "info": {"title": "T", "version": "1"},
            "tags": [{"name": "Calls"}],
            "paths": {
                "/v1/calls/{call_id}": {
                    "delete": {"tags": ["Calls"], "operationId": "del",
                        "parameters": [{"name": "call_id", "in": "path", "required": true, "schema": {"type": "string"}}]},
                    "get": {"tags": ["Calls"], "operationId": "get",
                        "parameters": [
                            {"name": "call_id", "in": "path", "required": true, "schema": {"type": "string"}},
                            {"name": "format", "in": "query", "required": true, "schema": {"type": "string"},
                             "description": "`openai` or `anthropic`."},
                            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}]}
                },
                "/v1/calls/start": {"post": {"tags": ["Calls"], "operationId": "start",
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S"}}}}}}
            },
            "components": {"schemas": {
                "S": {"type": "object", "required": ["call_id"], "properties": {
                    "call_id": {"type": "string"},
                    "identity_hints": {"allOf": [{"$ref": "#/components/schemas/H"}]},
                    "other": {"type": "string"}}},
                "H": {"type": "object", "properties": {"ani": {"type": "string"}, "kind": {"type": "string", "enum": ["x", "y"]}}}
            }}
        })
    }

    #[test]
    fn every_operation_becomes_a_request_deletions_last() {
        let c = collection(&spec(), "http://h:1/");
        assert_eq!(c["variable"][0]["value"], "http://h:1");
        let calls = &c["item"][0];
        assert_eq!(calls["name"], "Calls");
        let methods: Vec<&str> = calls["item"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["request"]["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["GET", "POST", "DELETE"]);
        let get = &calls["item"][0]["request"]["url"];
        assert_eq!(get["raw"], "{{baseUrl}}/v1/calls/:call_id?format=openai");
        assert_eq!(get["variable"][0]["value"], "postman-call-1");
        assert_eq!(get["query"][1]["disabled"], true);
        assert_eq!(get["query"][1]["value"], "1");
    }

    #[test]
    fn bodies_hold_the_required_and_the_known_fields() {
        let c = collection(&spec(), "http://h");
        let raw = c["item"][0]["item"][1]["request"]["body"]["raw"]
            .as_str()
            .unwrap()
            .to_owned();
        let body: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            body,
            json!({"call_id": "postman-call-1", "identity_hints": {"ani": "+14155550123"}})
        );
    }

    #[test]
    fn quoted_values_come_from_descriptions() {
        assert_eq!(quoted("`claude`, `chatgpt`"), Some("claude"));
        assert_eq!(quoted("no quotes"), None);
        assert_eq!(quoted("``"), None);
    }
}
