//! `/v1/agent`: what an AI agent builder downloads — system prompts in three formats, with
//! this server's address filled in, and tool definitions for OpenAI and Anthropic, generated
//! from this API's own OpenAPI document so that they cannot drift from it.

use std::sync::Arc;

use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};
use serde_json::{Map, Value, json};

use super::ApiTags;
use crate::auth::ApiKeyAuth;
use crate::error::ApiError;
use crate::state::AppState;

const CLAUDE: &str = include_str!("prompts/claude.md");
const CHATGPT: &str = include_str!("prompts/chatgpt.md");
const GENERIC: &str = include_str!("prompts/generic.txt");

/// The tools an agent is given: (tool name, operation id, description).
pub const TOOLS: &[(&str, &str, &str)] = &[
    (
        "start_call",
        "start_call",
        "Call at the start of every phone call, before greeting: who is calling, how sure, what to do (band, recommended_action), and their memory.",
    ),
    (
        "end_call",
        "end_call",
        "Call when the phone call ends: who the caller was, what it was about, whether it was resolved, a short summary and facts to remember.",
    ),
    (
        "find_customer",
        "find_customers",
        "Look customers up by phone number or external id outside a call.",
    ),
    (
        "resolve_intent",
        "resolve_intent",
        "Mark something a customer was owed (an open intent) as done.",
    ),
];

/// The system prompt of a format with the server's address filled in.
///
/// # Errors
/// `None` for an unknown format.
pub fn prompt(format: &str, base_url: &str) -> Option<String> {
    let text = match format {
        "claude" => CLAUDE,
        "chatgpt" => CHATGPT,
        "generic" => GENERIC,
        _ => return None,
    };
    Some(text.replace("{{BASE_URL}}", base_url.trim_end_matches('/')))
}

/// Replaces every `$ref` to a component schema by the schema itself.
fn inline(value: &Value, schemas: &Map<String, Value>, depth: usize) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                && depth < 16
                && let Some(schema) = schemas.get(name)
            {
                return inline(schema, schemas, depth + 1);
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline(v, schemas, depth)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline(v, schemas, depth)).collect())
        }
        other => other.clone(),
    }
}

/// The input schema of an operation of the OpenAPI document: its JSON body's schema, or an
/// object of its path and query parameters.
pub fn operation_input(spec: &Value, operation_id: &str) -> Option<Value> {
    let schemas = spec
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let op = spec
        .get("paths")?
        .as_object()?
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
        .find(|op| op.get("operationId").and_then(Value::as_str) == Some(operation_id))?;
    if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
        return Some(inline(body, &schemas, 0));
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in op.get("parameters")?.as_array()? {
        let name = p.get("name")?.as_str()?;
        let mut schema = inline(p.get("schema")?, &schemas, 0);
        if let (Some(obj), Some(d)) = (schema.as_object_mut(), p.get("description")) {
            obj.insert("description".into(), d.clone());
        }
        properties.insert(name.to_owned(), schema);
        if p.get("required").and_then(Value::as_bool) == Some(true) {
            required.push(Value::String(name.to_owned()));
        }
    }
    Some(json!({"type": "object", "properties": properties, "required": required}))
}

/// Tool definitions in `openai` or `anthropic` form, from the OpenAPI document `spec`.
pub fn tools(spec: &Value, format: &str) -> Option<Value> {
    let mut out = Vec::new();
    for (name, operation, description) in TOOLS {
        let input = operation_input(spec, operation)?;
        out.push(match format {
            "openai" => json!({"type": "function", "function": {
                "name": name, "description": description, "parameters": input}}),
            "anthropic" => json!({"name": name, "description": description, "input_schema": input}),
            _ => return None,
        });
    }
    Some(Value::Array(out))
}

#[derive(ApiResponse)]
enum PromptResponse {
    /// The system prompt.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
enum ToolsResponse {
    /// The tool definitions.
    #[oai(status = 200)]
    Ok(Json<Value>),
}

/// AI-agent kit.
pub struct AgentApi {
    /// Shared state.
    pub state: Arc<AppState>,
}

#[OpenApi(prefix_path = "/v1/agent", tag = "ApiTags::Agent")]
impl AgentApi {
    /// A system prompt for an AI agent that answers calls with Sticky Calls: `claude` (XML
    /// sections), `chatgpt` (Markdown) or `generic` (plain text), with this server's address.
    #[oai(
        path = "/prompts/:format",
        method = "get",
        operation_id = "get_agent_prompt"
    )]
    async fn prompt(
        &self,
        _auth: ApiKeyAuth,
        req: &Request,
        /// `claude`, `chatgpt` or `generic`.
        #[oai(validator(pattern = r"^(claude|chatgpt|generic)$"))]
        format: Path<String>,
    ) -> Result<PromptResponse, ApiError> {
        prompt(&format.0, &crate::connectors::public_base(&self.state, req))
            .map(|p| PromptResponse::Ok(PlainText(p)))
            .ok_or_else(|| ApiError::invalid("format", "`claude`, `chatgpt` or `generic`"))
    }

    /// Tool (function) definitions for start call, end call, customer look-up and resolving an
    /// intent, in OpenAI's or Anthropic's form, generated from this API's OpenAPI document.
    #[oai(path = "/tools", method = "get", operation_id = "get_agent_tools")]
    async fn tools(
        &self,
        _auth: ApiKeyAuth,
        /// `openai` or `anthropic`.
        #[oai(validator(pattern = r"^(openai|anthropic)$"))]
        format: Query<String>,
    ) -> Result<ToolsResponse, ApiError> {
        let spec = super::contract::document(self.state.clone());
        tools(&spec, &format.0)
            .map(|t| ToolsResponse::Ok(Json(t)))
            .ok_or_else(|| ApiError::invalid("format", "`openai` or `anthropic`"))
    }
}
