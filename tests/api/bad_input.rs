//! The bad-input table: every malformed request gets a 4xx with a stable code and the field,
//! and writes nothing.

use poem::http::StatusCode;
use serde_json::json;
use sticky_calls_tests::TestApp;

backend_tests!(
    bad_requests_get_a_stable_code_and_write_nothing,
    requests_without_a_valid_key_are_unauthorized,
    unknown_routes_and_methods_get_our_error_body,
    an_impossible_key_id_is_not_found,
    a_path_that_does_not_decode_is_an_invalid_value,
    bad_parameters_are_named_with_stable_codes,
);

struct Case {
    what: &'static str,
    path: &'static str,
    body: String,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    path: &'static str,
    body: impl Into<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        path,
        body: body.into(),
        status: StatusCode::from_u16(status).unwrap(),
        code,
        field,
    }
}

const START: &str = "/v1/calls/start";
const END: &str = "/v1/calls/end";

async fn bad_requests_get_a_stable_code_and_write_nothing(app: TestApp) {
    let many: serde_json::Map<String, serde_json::Value> =
        (0..101).map(|i| (format!("v{i}"), json!(i))).collect();
    let cases = [
        case(
            "malformed JSON",
            START,
            "{\"call_id\": ",
            400,
            "malformed_json",
            None,
        ),
        case("empty body", START, "", 400, "malformed_json", None),
        case(
            "identity hints as an array",
            START,
            r#"{"call_id": "a", "identity_hints": [null, null, null, null]}"#,
            400,
            "invalid_type",
            Some("identity_hints"),
        ),
        case(
            "an enum in its map form",
            START,
            r#"{"call_id": "a", "agent_format": {"claude": null}}"#,
            400,
            "invalid_type",
            Some("agent_format"),
        ),
        case(
            "an unknown enum value",
            END,
            r#"{"call_id": "a", "consent": "maybe"}"#,
            422,
            "invalid_value",
            Some("consent"),
        ),
        case(
            "an attestation as a number",
            START,
            r#"{"call_id": "a", "identity_hints": {"attestation": 1}}"#,
            400,
            "invalid_type",
            Some("identity_hints.attestation"),
        ),
        case(
            "a due time past year 9999 in UTC",
            END,
            r#"{"call_id": "a", "intent": "callback", "intent_due_at": "9999-12-31T23:59:59-23:59"}"#,
            422,
            "invalid_value",
            Some("intent_due_at"),
        ),
        case("not an object", START, "[]", 400, "invalid_type", None),
        case(
            "number as call_id",
            START,
            r#"{"call_id": 5}"#,
            400,
            "invalid_type",
            Some("call_id"),
        ),
        case(
            "missing call_id",
            START,
            r#"{}"#,
            400,
            "missing_field",
            Some("call_id"),
        ),
        case(
            "unknown top-level key",
            START,
            r#"{"call_id": "a", "caller": "x"}"#,
            400,
            "unknown_field",
            Some("caller"),
        ),
        case(
            "unknown hint",
            START,
            r#"{"call_id": "a", "identity_hints": {"phone": "1"}}"#,
            400,
            "unknown_field",
            Some("identity_hints.phone"),
        ),
        case(
            "ani of the wrong type",
            START,
            r#"{"call_id": "a", "identity_hints": {"ani": 14155551234}}"#,
            400,
            "invalid_type",
            Some("identity_hints.ani"),
        ),
        case(
            "external id of the wrong type",
            START,
            r#"{"call_id": "a", "identity_hints": {"external_ids": {"crm": 1}}}"#,
            400,
            "invalid_type",
            Some("identity_hints.external_ids.crm"),
        ),
        case(
            "empty call_id",
            START,
            r#"{"call_id": ""}"#,
            422,
            "invalid_value",
            Some("call_id"),
        ),
        case(
            "call_id of 129 characters",
            START,
            json!({"call_id": "a".repeat(129)}).to_string(),
            422,
            "invalid_value",
            Some("call_id"),
        ),
        case(
            "bad platform",
            START,
            r#"{"call_id": "a", "platform": "Not OK"}"#,
            422,
            "invalid_value",
            Some("platform"),
        ),
        case(
            "bad external id name",
            START,
            r#"{"call_id": "a", "identity_hints": {"external_ids": {"crm id": "1"}}}"#,
            422,
            "invalid_value",
            Some("identity_hints.external_ids.crm id"),
        ),
        case(
            "ani too long",
            START,
            json!({"call_id": "a", "identity_hints": {"ani": "1".repeat(300)}}).to_string(),
            422,
            "invalid_value",
            Some("identity_hints.ani"),
        ),
        case(
            "end: unknown key",
            END,
            r#"{"call_id": "a", "notes": "x"}"#,
            400,
            "unknown_field",
            Some("notes"),
        ),
        case(
            "end: variables not an object",
            END,
            r#"{"call_id": "a", "variables": [1]}"#,
            400,
            "invalid_type",
            Some("variables"),
        ),
        case(
            "end: 101 variables",
            END,
            json!({"call_id": "a", "variables": many}).to_string(),
            422,
            "invalid_value",
            Some("variables"),
        ),
        case(
            "end: variable name over 64",
            END,
            json!({"call_id": "a", "variables": {"n".repeat(65): 1}}).to_string(),
            422,
            "invalid_value",
            None,
        ),
        case(
            "end: variable value over 4 KiB",
            END,
            json!({"call_id": "a", "variables": {"big": "x".repeat(4100)}}).to_string(),
            422,
            "invalid_value",
            Some("variables.big"),
        ),
        case(
            "end: summary over 8,192 characters",
            END,
            json!({"call_id": "a", "summary": "x".repeat(8200)}).to_string(),
            422,
            "invalid_value",
            Some("summary"),
        ),
        case(
            "end: summary over 8,192 characters of two bytes each",
            END,
            json!({"call_id": "a", "summary": "é".repeat(8193)}).to_string(),
            422,
            "invalid_value",
            Some("summary"),
        ),
        case(
            "start: something after the JSON object",
            START,
            r#"{"call_id": "a"}xyz"#,
            400,
            "malformed_json",
            None,
        ),
        case(
            "start: a second JSON object",
            START,
            r#"{"call_id": "a"} {"call_id": "b"}"#,
            400,
            "malformed_json",
            None,
        ),
        case(
            "start: a key given twice",
            START,
            r#"{"call_id": "a", "call_id": "b"}"#,
            400,
            "malformed_json",
            Some("call_id"),
        ),
        case(
            "end: a callback due in the year 0",
            END,
            r#"{"call_id": "a", "intent": "callback", "intent_due_at": "0001-01-01T00:00:00+01:00"}"#,
            422,
            "invalid_value",
            Some("intent_due_at"),
        ),
        case(
            "end: NUL in the summary",
            END,
            r#"{"call_id": "a", "summary": "a\u0000b"}"#,
            422,
            "invalid_value",
            Some("summary"),
        ),
        case(
            "start: NUL in the dialled number",
            START,
            r#"{"call_id": "a", "identity_hints": {"dnis": "+1800\u0000"}}"#,
            422,
            "invalid_value",
            Some("identity_hints.dnis"),
        ),
        case(
            "end: bad intent_status",
            END,
            r#"{"call_id": "a", "intent": "x", "intent_status": "closed"}"#,
            422,
            "invalid_value",
            Some("intent_status"),
        ),
        case(
            "end: callback time without its offset",
            END,
            r#"{"call_id": "a", "intent": "callback", "intent_due_at": "2026-12-05 15:00"}"#,
            422,
            "invalid_value",
            Some("intent_due_at"),
        ),
        case(
            "end: time to live for a bad variable name",
            END,
            r#"{"call_id": "a", "variable_ttl_seconds": {"has space": 60}}"#,
            422,
            "invalid_value",
            Some("variable_ttl_seconds.has space"),
        ),
        case(
            "end: time to live of zero",
            END,
            r#"{"call_id": "a", "variables": {"otp": true}, "variable_ttl_seconds": {"otp": 0}}"#,
            422,
            "invalid_value",
            Some("variable_ttl_seconds.otp"),
        ),
        case(
            "end: time to live that is not a number",
            END,
            r#"{"call_id": "a", "variables": {"otp": true}, "variable_ttl_seconds": {"otp": "1h"}}"#,
            400,
            "invalid_type",
            Some("variable_ttl_seconds.otp"),
        ),
        case(
            "end: callback time without an intent",
            END,
            r#"{"call_id": "a", "intent_due_at": "2026-12-05T15:00:00Z"}"#,
            422,
            "invalid_value",
            Some("intent_due_at"),
        ),
        case(
            "end: bad intent",
            END,
            r#"{"call_id": "a", "intent": "has space"}"#,
            422,
            "invalid_value",
            Some("intent"),
        ),
        case(
            "end: bad customer_ref",
            END,
            r#"{"call_id": "a", "customer_ref": "a b"}"#,
            422,
            "invalid_value",
            Some("customer_ref"),
        ),
        case(
            "end: customer_ref of the wrong type",
            END,
            r#"{"call_id": "a", "customer_ref": 7}"#,
            400,
            "invalid_type",
            Some("customer_ref"),
        ),
        case(
            "body over 64 KiB",
            END,
            json!({"call_id": "a", "summary": "x".repeat(70_000)}).to_string(),
            413,
            "payload_too_large",
            None,
        ),
        case(
            "unlink: unknown key",
            "/v1/customers/a/unlink",
            r#"{"number": "1"}"#,
            400,
            "unknown_field",
            Some("number"),
        ),
        case(
            "api key: unknown key",
            "/v1/api-keys",
            r#"{"name": "1"}"#,
            400,
            "unknown_field",
            Some("name"),
        ),
        case(
            "api key: label too long",
            "/v1/api-keys",
            json!({"label": "l".repeat(200)}).to_string(),
            422,
            "invalid_value",
            Some("label"),
        ),
    ];
    for c in cases {
        let r = app.send("POST", c.path, Some(&app.key), Some(c.body)).await;
        assert_eq!(r.status, c.status, "{}: {}", c.what, r.body);
        assert_eq!(r.body["error"]["code"], c.code, "{}", c.what);
        if let Some(f) = c.field {
            assert_eq!(r.body["error"]["field"], f, "{}", c.what);
        }
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}",
            c.what
        );
        assert_eq!(
            r.body["error"]["request_id"].as_str(),
            r.request_id.as_deref(),
            "{}: the body carries the request id",
            c.what
        );
    }
    for table in ["calls", "customers", "identities", "variables", "intents"] {
        assert_eq!(app.count_rows(table).await, 0, "nothing written to {table}");
    }
    assert_eq!(app.count_rows("api_keys").await, 1);
}

async fn requests_without_a_valid_key_are_unauthorized(app: TestApp) {
    let body = Some(r#"{"call_id": "a"}"#.to_owned());
    for (what, key) in [
        ("no key", None),
        ("garbage key", Some("nope")),
        (
            "unknown key",
            Some("sc_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ),
        ("right prefix, wrong secret", Some(&app.key[..20])),
    ] {
        let r = app.send("POST", START, key, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.body["error"]["code"], "unauthorized", "{what}");
    }
    let mut wrong = app.key.clone();
    wrong.pop();
    wrong.push('9');
    let r = app.send("POST", START, Some(&wrong), body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "one character off");
    assert_eq!(app.count_calls().await, 0);
}

async fn unknown_routes_and_methods_get_our_error_body(app: TestApp) {
    let r = app.get("/v1/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "not_found");
    let r = app
        .send("PUT", "/v1/calls/start", Some(&app.key), None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"]["code"], "method_not_allowed");
}

/// A path that does not decode to text is refused, not looked up.
async fn a_path_that_does_not_decode_is_an_invalid_value(app: TestApp) {
    for path in ["/v1/calls/%FF", "/v1/customers/%FF"] {
        let r = app.get(path).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], "invalid_value", "{}", r.body);
    }
}

/// A key id that no key can have (a NUL, which PostgreSQL refuses in text) is simply not
/// found, on both databases.
async fn an_impossible_key_id_is_not_found(app: TestApp) {
    for id in ["%00", "key_%00abc", "a%20b"] {
        let r = app.delete(&format!("/v1/api-keys/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{id}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "api_key_not_found", "{}", r.body);
    }
}

/// Path and query parameters get the codes body fields get, with the parameter named.
async fn bad_parameters_are_named_with_stable_codes(app: TestApp) {
    for (path, status, code, field) in [
        ("/v1/audit?limit=0", 422, "invalid_value", "limit"),
        ("/v1/audit?limit=abc", 400, "invalid_type", "limit"),
        (
            "/v1/billing/events?limit=501",
            422,
            "invalid_value",
            "limit",
        ),
        ("/v1/agent/tools", 400, "missing_field", "format"),
        (
            "/v1/agent/tools?format=gemini",
            422,
            "invalid_value",
            "format",
        ),
        ("/v1/agent/prompts/llama", 422, "invalid_value", "format"),
        (
            "/v1/customers?external_id=nocolon",
            422,
            "invalid_value",
            "external_id",
        ),
        ("/v1/customers?ani=", 422, "invalid_value", "ani"),
        (
            "/v1/customers?limit=18446744073709551616",
            422,
            "invalid_value",
            "limit",
        ),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{path}: {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{path}: {}", r.body);
    }
}
