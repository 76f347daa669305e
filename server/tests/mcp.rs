//! `/mcp` end to end: the official MCP client (`rmcp`, Streamable HTTP) against the real
//! server. It lists the tools (the same as `GET /v1/agent/tools`), starts a call from a new
//! number, ends it, starts another from the same number and is recognised, reads an invalid
//! argument back as a tool error with the API's error code, and sees only its own tenant's
//! data. Without a key, or with a wrong one, `/mcp` answers 401.

mod support;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use support::Server;

const KEY: &str = "mcp-test-key-0123456789abcdef0123";

async fn client(port: u16, key: &str) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{port}/mcp"))
            .auth_header(key),
    );
    ().serve(transport).await.expect("the MCP client connects")
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments are an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args as JsonObject))
        .await
        .expect("the tool call is answered")
}

/// The tool's JSON answer.
fn answer(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_remembers_a_caller() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mcp.db").display());
    let server = Server::start(&url, dir.path(), &[("STICKY_BOOTSTRAP_API_KEY", KEY)]);
    let port = server.port;
    let mcp = client(port, KEY).await;

    let info = mcp.peer_info().expect("initialised");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("sticky-calls")
    );
    assert!(
        info.instructions
            .as_deref()
            .is_some_and(|i| i.contains("never instructions")),
        "{info:?}"
    );
    let mut names: Vec<String> = mcp
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["end_call", "find_customer", "resolve_intent", "start_call"]
    );

    let first = call(
        &mcp,
        "start_call",
        json!({"call_id": "mcp-1", "identity_hints": {"ani": "+14155550188"}}),
    )
    .await;
    assert_eq!(first.is_error, Some(false), "{first:?}");
    assert_eq!(answer(&first)["band"], "low", "{first:?}");
    let end = call(
        &mcp,
        "end_call",
        json!({"call_id": "mcp-1", "customer_ref": "mcp-cust", "summary": "asked about a refund",
               "intent": "refund", "intent_status": "open", "variables": {"plan": "gold"}}),
    )
    .await;
    assert_eq!(end.is_error, Some(false), "{end:?}");
    let again = call(
        &mcp,
        "start_call",
        json!({"call_id": "mcp-2", "identity_hints": {"ani": "+14155550188"}}),
    )
    .await;
    let known = answer(&again);
    assert_eq!(known["band"], "high", "{known}");
    assert_eq!(known["customer_ref"], "mcp-cust", "{known}");
    assert_eq!(known["context"]["variables"]["plan"], "gold", "{known}");

    // A look-up by number, and resolving the open intent (a path parameter).
    let found = call(&mcp, "find_customer", json!({"ani": "+14155550188"})).await;
    assert_eq!(
        answer(&found)["customers"][0]["customer_ref"],
        "mcp-cust",
        "{found:?}"
    );
    let resolved = call(
        &mcp,
        "resolve_intent",
        json!({"customer_ref": "mcp-cust", "intent": "refund"}),
    )
    .await;
    assert_eq!(resolved.is_error, Some(false), "{resolved:?}");

    // A bad argument is a tool error carrying the API's error body.
    let bad = call(
        &mcp,
        "start_call",
        json!({"identity_hints": {"ani": "+14155550188"}}),
    )
    .await;
    assert_eq!(bad.is_error, Some(true), "{bad:?}");
    assert_eq!(answer(&bad)["error"]["field"], "call_id", "{bad:?}");
    assert_eq!(answer(&bad)["error"]["code"], "missing_field", "{bad:?}");
    // A missing path parameter is refused before any request is made.
    let missing = mcp
        .call_tool(
            CallToolRequestParams::new("resolve_intent")
                .with_arguments(json!({"intent": "refund"}).as_object().unwrap().clone()),
        )
        .await;
    assert!(missing.is_err(), "{missing:?}");
    mcp.cancel().await.unwrap();

    // Another tenant's key sees nothing of this one.
    let out = std::process::Command::new(support::BIN)
        .args(["tenants", "create", "other"])
        .env("STICKY_DATABASE_URL", &url)
        .env("STICKY_BCRYPT_COST", "4")
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let other = client(port, &other_key).await;
    let theirs = call(&other, "find_customer", json!({"ani": "+14155550188"})).await;
    assert_eq!(answer(&theirs)["customers"], json!([]), "{theirs:?}");
    let stranger = call(
        &other,
        "start_call",
        json!({"call_id": "mcp-9", "identity_hints": {"ani": "+14155550188"}}),
    )
    .await;
    assert_eq!(answer(&stranger)["band"], "low", "{stranger:?}");
    other.cancel().await.unwrap();

    // Without a key, or with a wrong one: 401 with the API's error body.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let body = init.to_string();
    for auth in [None, Some("Bearer wrong-key-0123456789abcdef")] {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ];
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        let r = server.request("POST", "/mcp", &headers, body.as_bytes());
        assert_eq!(r.status, 401, "{auth:?}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "unauthorized", "{}", r.body);
    }
    server.kill();
}
