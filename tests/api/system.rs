//! Health, readiness, the API document, request ids, and the real server on a bound port.

use poem::http::StatusCode;
use sticky_calls_server::Application;
use sticky_calls_tests::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backend_tests!(
    health_and_readiness_answer,
    the_openapi_document_is_stable,
    the_docs_page_is_served,
    a_request_id_is_returned_and_a_sane_one_is_reused,
    the_server_answers_on_a_bound_port,
    a_method_not_allowed_says_which_are,
    metrics_count_requests_and_recognised_callers,
    the_postman_collection_has_every_operation,
);

async fn health_and_readiness_answer(app: TestApp) {
    let h = app.send("GET", "/healthz", None, None).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.body["status"], "ok");
    let r = app.send("GET", "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "ready");
}

async fn the_openapi_document_is_stable(app: TestApp) {
    let r = app.send("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    insta::assert_json_snapshot!("openapi", r.body);
}

/// Every operation of the API document is one request of the collection, with the API key
/// as its bearer token and a JSON body where the operation takes one. (CI also runs it with
/// newman against a live server.)
async fn the_postman_collection_has_every_operation(app: TestApp) {
    let spec = app.send("GET", "/openapi.json", None, None).await.body;
    let r = app.send("GET", "/postman.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let c = r.body;
    assert_eq!(c["auth"]["bearer"][0]["value"], "{{api_key}}");
    let mut expected = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let postman_path = path
                .split('/')
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => format!(":{name}"),
                        None => s.to_owned(),
                    },
                )
                .collect::<Vec<_>>()
                .join("/");
            expected.push((
                method.to_ascii_uppercase(),
                postman_path,
                op.get("requestBody").is_some(),
            ));
        }
    }
    let mut found = Vec::new();
    for folder in c["item"].as_array().unwrap() {
        for item in folder["item"].as_array().unwrap() {
            let req = &item["request"];
            let path = req["url"]["path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join("/");
            found.push((
                req["method"].as_str().unwrap().to_owned(),
                format!("/{path}"),
                req.get("body").is_some(),
            ));
            if let Some(raw) = req["body"]["raw"].as_str() {
                let body: serde_json::Value = serde_json::from_str(raw).expect("a JSON body");
                assert!(body.is_object(), "{raw}");
            }
        }
    }
    expected.sort();
    found.sort();
    assert_eq!(found, expected);
}

async fn the_docs_page_is_served(app: TestApp) {
    let resp = app.client.get("/docs").send().await;
    resp.assert_status_is_ok();
    let html = resp.0.into_body().into_string().await.unwrap();
    assert!(html.contains("swagger"), "Swagger UI page");
}

async fn a_request_id_is_returned_and_a_sane_one_is_reused(app: TestApp) {
    let fresh = app.send("GET", "/healthz", None, None).await;
    assert!(fresh.request_id.unwrap().starts_with("req_"));
    let resp = app
        .client
        .get("/healthz")
        .header("x-request-id", "trace-123")
        .send()
        .await;
    assert_eq!(resp.0.headers().get("x-request-id").unwrap(), "trace-123");
}

async fn the_server_answers_on_a_bound_port(app: TestApp) {
    let stopped = app.stop();
    let server = Application::build(stopped.settings()).await.unwrap();
    let port = server.port();
    assert_ne!(port, 0);
    let task = tokio::spawn(server.run_until_stopped());
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#"{"status":"ok"}"#), "{response}");
    task.abort();
}

async fn a_method_not_allowed_says_which_are(app: TestApp) {
    for (method, path, allow) in [
        ("DELETE", "/v1/calls/start", "POST"),
        ("PUT", "/v1/calls/abc", "GET"),
        ("PATCH", "/v1/customers", "DELETE, GET"),
        ("PUT", "/v1/connectors/twilio/start", "GET, POST"),
        ("GET", "/v1/connectors/amazon-connect", "POST"),
    ] {
        let m = poem::http::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app
            .client
            .request(m, path)
            .header("authorization", format!("Bearer {}", app.key))
            .send()
            .await;
        resp.assert_status(StatusCode::METHOD_NOT_ALLOWED);
        let got = resp
            .0
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
    }
}

/// `GET /metrics` as text, with an optional bearer token.
async fn metrics_text(app: &TestApp, token: Option<&str>) -> (StatusCode, String) {
    let mut req = app.client.get("/metrics");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await;
    let status = resp.0.status();
    let bytes = resp.0.into_body().into_vec().await.expect("body");
    (status, String::from_utf8(bytes).expect("text"))
}

/// The value of the series whose line starts with `series` (0 when absent).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn metrics_count_requests_and_recognised_callers(app: TestApp) {
    // The recorder is the process's: other tests count too, so compare before and after.
    let (status, before) = metrics_text(&app, None).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    let ani = "+14155550467";
    app.end_call(
        serde_json::json!({"call_id": "m-1", "customer_ref": "metrics-cust",
        "identity_hints": {"ani": ani}, "variables": {"name": "Ana"}}),
    )
    .await;
    let known = app
        .start_call(serde_json::json!({"call_id": "m-2", "identity_hints": {"ani": ani}}))
        .await;
    assert_eq!(known["band"], "high", "{known}");
    let (_, after) = metrics_text(&app, None).await;
    let high = r#"sticky_call_starts_total{band="high"}"#;
    assert!(value(&after, high) >= value(&before, high) + 1.0, "{after}");
    assert!(
        value(&after, "sticky_call_ends_total") >= value(&before, "sticky_call_ends_total") + 1.0
    );
    let starts = r#"sticky_http_requests_total{route="/v1/calls/start",status="200"}"#;
    assert!(value(&after, starts) >= 1.0, "{after}");
    assert!(
        after.contains(
            r#"sticky_http_request_duration_seconds_bucket{route="/v1/calls/start",le="0.001"}"#
        ),
        "{after}"
    );
    assert!(
        after.contains("# TYPE sticky_call_starts_total counter"),
        "{after}"
    );
    // The key was verified once, then answered from the cache.
    let key_hits = r#"sticky_cache_lookups_total{cache="api_keys",result="hit"}"#;
    assert!(
        value(&after, key_hits) >= value(&before, key_hits) + 1.0,
        "{after}"
    );
    // The pool and the journal, read at scrape time.
    assert!(
        value(&after, r#"sticky_db_pool_connections{state="idle"}"#)
            + value(&after, r#"sticky_db_pool_connections{state="in_use"}"#)
            >= 1.0,
        "{after}"
    );
    for gauge in [
        "# TYPE sticky_open_calls gauge",
        "# TYPE sticky_journal_bytes gauge",
    ] {
        assert!(after.contains(gauge), "{after}");
    }
    // Routes are masked and unknown paths share one series: no caller's data in a label.
    app.get("/v1/customers/metrics-cust").await;
    app.get("/v1/no/such/+14155550467/path").await;
    let (_, later) = metrics_text(&app, None).await;
    assert!(later.contains(r#"route="/v1/customers/:param""#), "{later}");
    assert!(later.contains(r#"route="unmatched""#), "{later}");
    for private in ["metrics-cust", "4155550467", "Ana"] {
        assert!(!later.contains(private), "{private} in the metrics");
    }
    // With a token set, the metrics are for its holder only.
    let stopped = app.stop();
    let mut settings = stopped.settings();
    settings.metrics_token = Some("scrape-token-0123456789".into());
    let app = stopped.start_with(settings).await;
    let (status, body) = metrics_text(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
    let (status, _) = metrics_text(&app, Some("wrong-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = metrics_text(&app, Some("scrape-token-0123456789")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("sticky_http_requests_total"), "{body}");
}
