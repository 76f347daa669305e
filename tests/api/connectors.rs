//! Platform webhooks end to end: native payloads in, native answers out, the call and the
//! customer read back through the REST API.

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;
use sticky_connector_twilio::signature;

backend_tests!(
    a_twilio_caller_is_recognised_on_the_second_call_in_twiml,
    twilio_signatures_are_verified_once_the_auth_token_is_set,
    twilio_settings_are_validated_and_kept_per_tenant,
    twilio_outbound_calls_child_legs_context_opt_in_and_subaccounts,
    twilio_status_callbacks_and_get_webhooks_are_signed_too,
    a_platform_secret_survives_a_restart_and_nothing_else_opens_it,
    a_platform_hang_up_and_a_rest_end_merge_in_either_order,
    an_amazon_connect_caller_is_recognised_after_an_eventbridge_disconnect,
    amazon_connect_transfers_are_one_call_and_full_attribute_events_are_accepted,
    a_dialogflow_cx_caller_is_recognised_with_saved_variables,
    connector_errors_are_4xx_with_our_error_body,
    connector_tenants_are_isolated,
);

const HOST: &str = "sticky.test";
const NEXT: &str = "https%3A%2F%2Fexample.com%2Fvoice";

fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("sticky:{key}"))
    )
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B")))
        .collect::<Vec<_>>()
        .join("&")
}

fn voice(call_sid: &str, from: &str) -> String {
    form(&[
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", from),
        ("To", "+18005550100"),
    ])
}

fn status(call_sid: &str, from: &str, call_status: &str) -> String {
    form(&[
        ("CallSid", call_sid),
        ("CallStatus", call_status),
        ("CallDuration", "42"),
        ("From", from),
        ("To", "+18005550100"),
    ])
}

fn form_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", basic(key)),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("host", HOST.into()),
    ]
}

fn json_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {key}")),
        ("content-type", "application/json".into()),
    ]
}

/// Dialogflow CX with service-agent auth puts Google's token in `Authorization`.
fn cx_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", "Bearer ya29.a-google-token".into()),
        ("x-sticky-api-key", key.to_owned()),
        ("content-type", "application/json".into()),
    ]
}

async fn a_twilio_caller_is_recognised_on_the_second_call_in_twiml(app: TestApp) {
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    let first = app
        .send_raw(
            &start,
            &form_headers(&app.key),
            voice("CA01", "+14155551234"),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(first.content_type.starts_with("text/xml"));
    assert!(first.text.contains("<Redirect method=\"POST\">https://example.com/voice?sticky_action=treat_as_new&amp;sticky_band=low&amp;sticky_call_id=CA01&amp;sticky_confidence="), "{}", first.text);

    let ended = app
        .send_raw(
            "/v1/connectors/twilio/end",
            &form_headers(&app.key),
            status("CA01", "+14155551234", "completed"),
        )
        .await;
    assert_eq!(ended.status, StatusCode::OK, "{}", ended.text);
    assert!(ended.text.contains("<Response/>"));

    let second = app
        .send_raw(
            &start,
            &form_headers(&app.key),
            voice("CA02", "+14155551234"),
        )
        .await;
    let stored = app.get("/v1/calls/CA01").await.body;
    let customer = stored["customer_ref"].as_str().unwrap().to_owned();
    assert!(
        second
            .text
            .contains(&format!("sticky_customer_ref={customer}")),
        "{}",
        second.text
    );
    assert!(second.text.contains("sticky_band=high"), "{}", second.text);
    assert_eq!(stored["platform"], "twilio");
    assert_eq!(stored["ani"], "+14155551234");
    assert_eq!(stored["status"], "ended");

    // A number whose webhook is configured for GET sends the same parameters in the query.
    let get = app
        .client
        .get(format!(
            "{start}&CallSid=CA03&From=%2B14155551234&To=%2B18005550100&CallStatus=ringing"
        ))
        .header("authorization", basic(&app.key))
        .send()
        .await;
    let get_text = get.0.into_body().into_string().await.unwrap();
    assert!(get_text.contains("sticky_band=high"), "{get_text}");
    assert!(
        !get_text.contains("CallSid=CA03"),
        "Twilio's own parameters are not echoed"
    );

    let ringing = app
        .send_raw(
            "/v1/connectors/twilio/end",
            &form_headers(&app.key),
            status("CA02", "+14155551234", "in-progress"),
        )
        .await;
    assert_eq!(ringing.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/calls/CA02").await.body["status"],
        "in_progress"
    );
}

async fn twilio_signatures_are_verified_once_the_auth_token_is_set(app: TestApp) {
    let token = "0123456789abcdef0123456789abcdef";
    let r = app
        .send(
            "PUT",
            "/v1/connectors/twilio/settings",
            Some(&app.key),
            Some(json!({"auth_token": token}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);

    let path = format!("/v1/connectors/twilio/start?next={NEXT}");
    let url = format!("http://{HOST}{path}");
    let body = voice("CA10", "+14155551234");
    let params: Vec<(String, String)> = serde_urlencoded_pairs(&body);

    let unsigned = app
        .send_raw(&path, &form_headers(&app.key), body.clone())
        .await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_eq!(unsigned.json()["error"]["code"], "bad_signature");

    let mut forged = form_headers(&app.key);
    forged.push((
        "x-twilio-signature",
        signature::compute("wrong-token-000000000000", &url, &params),
    ));
    let r = app.send_raw(&path, &forged, body.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.count_calls().await,
        0,
        "nothing written on a bad signature"
    );

    // Twilio signs the URL as configured, Basic credentials included.
    let configured = format!("http://sticky:{}@{HOST}{path}", app.key);
    let mut signed = form_headers(&app.key);
    signed.push((
        "x-twilio-signature",
        signature::compute(token, &configured, &params),
    ));
    let r = app.send_raw(&path, &signed, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Behind a TLS proxy the URL Twilio called is https.
    let mut proxied = vec![
        ("authorization", format!("Bearer {}", app.key)),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("host", "internal:8080".into()),
        ("x-forwarded-proto", "https".into()),
        ("x-forwarded-host", HOST.into()),
    ];
    let body2 = voice("CA11", "+14155551234");
    proxied.push((
        "x-twilio-signature",
        signature::compute(
            token,
            &format!("https://{HOST}{path}"),
            &serde_urlencoded_pairs(&body2),
        ),
    ));
    let r = app.send_raw(&path, &proxied, body2).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Behind two proxies each appends: the first host and scheme are the ones Twilio called.
    let body3 = voice("CA13", "+14155551234");
    let chained = vec![
        ("authorization", format!("Bearer {}", app.key)),
        ("content-type", "application/x-www-form-urlencoded".into()),
        ("host", "internal:8080".into()),
        ("x-forwarded-proto", "https, http".into()),
        ("x-forwarded-host", format!("{HOST}, lb.internal:8443")),
        (
            "x-twilio-signature",
            signature::compute(
                token,
                &format!("https://{HOST}{path}"),
                &serde_urlencoded_pairs(&body3),
            ),
        ),
    ];
    let r = app.send_raw(&path, &chained, body3).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // A Studio JSON request is signed over the URL with the body's hash.
    let studio =
        json!({"CallSid": "CA12", "From": "+14155551234", "To": "+18005550100"}).to_string();
    let studio_path = format!(
        "/v1/connectors/twilio/start?bodySHA256={}",
        signature::body_sha256(studio.as_bytes())
    );
    let mut h = json_headers(&app.key);
    h.push(("host", HOST.into()));
    h.push((
        "x-twilio-signature",
        signature::compute(token, &format!("http://{HOST}{studio_path}"), &[]),
    ));
    let r = app.send_raw(&studio_path, &h, studio.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["call_id"], "CA12");
    let tampered = app
        .send_raw(&studio_path, &h, studio.replace("CA12", "CA13"))
        .await;
    assert_eq!(tampered.status, StatusCode::FORBIDDEN);
}

fn serde_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_owned(), v.replace("%2B", "+"))
        })
        .collect()
}

async fn twilio_settings_are_validated_and_kept_per_tenant(app: TestApp) {
    for (body, status, code) in [
        (json!({"auth_token": "short"}), 422, "invalid_value"),
        (json!({"auth_token": 5}), 400, "invalid_type"),
        (
            json!({"token": "0123456789abcdef0123456789abcdef"}),
            400,
            "unknown_field",
        ),
        (json!({}), 400, "missing_field"),
    ] {
        let r = app
            .send(
                "PUT",
                "/v1/connectors/twilio/settings",
                Some(&app.key),
                Some(body.to_string()),
            )
            .await;
        assert_eq!(r.status.as_u16(), status, "{body}");
        assert_eq!(r.body["error"]["code"], code, "{body}");
    }
    let r = app
        .send(
            "PUT",
            "/v1/connectors/amazon-connect/settings",
            Some(&app.key),
            Some("{}".into()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"]["code"], "settings_not_supported");
    let r = app
        .send(
            "PUT",
            "/v1/connectors/nope/settings",
            Some(&app.key),
            Some("{}".into()),
        )
        .await;
    assert_eq!(r.body["error"]["code"], "unknown_platform");

    // The token is stored encrypted: the database never holds it in clear.
    let token = "fedcba9876543210fedcba9876543210";
    app.send(
        "PUT",
        "/v1/connectors/twilio/settings",
        Some(&app.key),
        Some(json!({"auth_token": token}).to_string()),
    )
    .await;
    let db = app.state.engine.db();
    use sea_orm::{ConnectionTrait, Statement};
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT ciphertext, nonce FROM connector_settings",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].try_get("", "ciphertext").unwrap();
    assert!(!stored.contains(token));
}

async fn a_platform_hang_up_and_a_rest_end_merge_in_either_order(app: TestApp) {
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    for (sid, rest_first) in [("CA21", true), ("CA22", false)] {
        app.send_raw(&start, &form_headers(&app.key), voice(sid, "+14155551234"))
            .await;
        let rest = json!({"call_id": sid, "customer_ref": "crm_7", "intent": "billing", "summary": "AI agent summary"});
        let hang_up = status(sid, "+14155551234", "completed");
        if rest_first {
            app.end_call(rest).await;
            app.send_raw(
                "/v1/connectors/twilio/end",
                &form_headers(&app.key),
                hang_up,
            )
            .await;
        } else {
            app.send_raw(
                "/v1/connectors/twilio/end",
                &form_headers(&app.key),
                hang_up,
            )
            .await;
            app.end_call(rest).await;
        }
        let call = app.get(&format!("/v1/calls/{sid}")).await.body;
        assert_eq!(call["customer_ref"], "crm_7", "rest first: {rest_first}");
        assert_eq!(call["summary"], "AI agent summary");
        assert_eq!(call["status"], "ended");
    }
    assert_eq!(
        app.count_rows("customers").await,
        1,
        "the provisional customer was merged"
    );
    assert_eq!(app.get("/v1/customers/crm_7").await.body["call_count"], 2);
}

fn connect_event(contact_id: &str, params: Value) -> String {
    json!({
        "Details": {
            "ContactData": {
                "Attributes": {},
                "Channel": "VOICE",
                "ContactId": contact_id,
                "CustomerEndpoint": {"Address": "+14155551234", "Type": "TELEPHONE_NUMBER"},
                "InitialContactId": contact_id,
                "InitiationMethod": "INBOUND",
                "SystemEndpoint": {"Address": "+18005550100", "Type": "TELEPHONE_NUMBER"}
            },
            "Parameters": params
        },
        "Name": "ContactFlowEvent"
    })
    .to_string()
}

async fn an_amazon_connect_caller_is_recognised_after_an_eventbridge_disconnect(app: TestApp) {
    let h = json_headers(&app.key);
    let first = app
        .send_raw(
            "/v1/connectors/amazon-connect/start",
            &h,
            connect_event("c-1", json!({"ext_crm_id": "crm_9"})),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json()["sticky_band"], "low");
    let disconnected = json!({
        "version": "0", "id": "e1", "detail-type": "Amazon Connect Contact Event", "source": "aws.connect",
        "detail": {"eventType": "DISCONNECTED", "contactId": "c-1", "channel": "VOICE", "initiationMethod": "INBOUND"}
    });
    let r = app
        .send_raw(
            "/v1/connectors/amazon-connect",
            &h,
            disconnected.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.get("/v1/calls/c-1").await.body["status"], "ended");

    let end = app
        .send_raw(
            "/v1/connectors/amazon-connect",
            &h,
            connect_event(
                "c-1",
                json!({"sticky_event": "end", "customer_ref": "acme-42", "var_tier": "gold"}),
            ),
        )
        .await;
    assert_eq!(end.json()["sticky_customer_ref"], "acme-42", "{}", end.text);

    let second = app
        .send_raw(
            "/v1/connectors/amazon-connect/start",
            &h,
            connect_event("c-2", json!({})),
        )
        .await;
    let map = second.json();
    assert_eq!(map["sticky_customer_ref"], "acme-42");
    assert_eq!(map["sticky_band"], "high");
    assert_eq!(map["sticky_var_tier"], "gold");
    assert!(map.as_object().unwrap().values().all(Value::is_string));
    let by_crm = app.get("/v1/customers?external_id=crm_id:crm_9").await.body;
    assert_eq!(by_crm["customers"][0]["customer_ref"], "acme-42");
}

fn cx(session: &str, tag: &str, params: Value) -> String {
    json!({
        "detectIntentResponseId": "r1",
        "sessionInfo": {"session": format!("projects/p/locations/global/agents/a/sessions/{session}"), "parameters": params},
        "fulfillmentInfo": {"tag": tag},
        "languageCode": "en",
        "payload": {"telephony": {"caller_id": "+14155551234"}}
    })
    .to_string()
}

async fn a_dialogflow_cx_caller_is_recognised_with_saved_variables(app: TestApp) {
    let h = cx_headers(&app.key);
    let url = "/v1/connectors/dialogflow-cx?greeting=Welcome%20back%2C%20%7Bname%7D!";
    let first = app
        .send_raw(url, &h, cx("s1", "sticky-start", json!({})))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        first.json()["sessionInfo"]["parameters"]["sticky_band"],
        "low"
    );
    assert!(first.json().get("fulfillmentResponse").is_none());
    let end = app
        .send_raw(url, &h, cx("s1", "sticky-end", json!({"customer_ref": "cx-1", "intent": "refund_request", "name": "Ana", "order_id": "77"})))
        .await;
    assert_eq!(
        end.json()["sessionInfo"]["parameters"]["sticky_customer_ref"],
        "cx-1",
        "{}",
        end.text
    );
    let second = app
        .send_raw(url, &h, cx("s2", "sticky-start", json!({})))
        .await;
    let v = second.json();
    let p = &v["sessionInfo"]["parameters"];
    assert_eq!(p["sticky_customer_ref"], "cx-1");
    assert_eq!(p["sticky_band"], "high");
    assert_eq!(p["sticky_var_order_id"], "77");
    assert_eq!(p["sticky_open_intents"], json!(["refund_request"]));
    assert_eq!(
        v["fulfillmentResponse"]["messages"][0]["text"]["text"][0],
        "Welcome back, Ana!"
    );
    let call = app.get("/v1/calls/s1").await.body;
    assert_eq!(call["platform"], "dialogflow-cx");
    assert_eq!(call["intent"], "refund_request");
}

async fn connector_errors_are_4xx_with_our_error_body(app: TestApp) {
    let json_h = json_headers(&app.key);
    let bad_event = connect_event_str();
    let huge = "x".repeat(300_000);
    // (what, path, headers, body, status, code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        &'a str,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown platform",
            "/v1/connectors/nope/start",
            json_h.clone(),
            "{}",
            404,
            "unknown_platform",
        ),
        (
            "no auth",
            "/v1/connectors/twilio/start?next=https%3A%2F%2Fa.b",
            vec![("content-type", "application/x-www-form-urlencoded".into())],
            "CallSid=CA1",
            401,
            "unauthorized",
        ),
        (
            "wrong basic password",
            "/v1/connectors/twilio/start?next=https%3A%2F%2Fa.b",
            form_headers("sc_not_a_real_key_000000000000"),
            "CallSid=CA1",
            401,
            "unauthorized",
        ),
        (
            "twilio without next",
            "/v1/connectors/twilio/start",
            form_headers(&app.key),
            "CallSid=CA1&From=%2B14155551234",
            400,
            "missing_field",
        ),
        (
            "twilio next not a URL",
            "/v1/connectors/twilio/start?next=ftp%3A%2F%2Fx",
            form_headers(&app.key),
            "CallSid=CA1",
            422,
            "invalid_value",
        ),
        (
            "twilio without CallSid",
            "/v1/connectors/twilio/start?next=https%3A%2F%2Fa.b",
            form_headers(&app.key),
            "From=%2B14155551234",
            400,
            "missing_field",
        ),
        (
            "twilio auto route",
            "/v1/connectors/twilio",
            form_headers(&app.key),
            "CallSid=CA1",
            404,
            "not_found",
        ),
        (
            "connect garbage",
            "/v1/connectors/amazon-connect/start",
            json_h.clone(),
            "not json",
            400,
            "malformed_payload",
        ),
        (
            "connect wrong types",
            "/v1/connectors/amazon-connect/start",
            json_h.clone(),
            "{\"Details\": 5}",
            400,
            "invalid_payload",
        ),
        (
            "connect bad sticky_event",
            "/v1/connectors/amazon-connect",
            json_h.clone(),
            &bad_event,
            422,
            "invalid_value",
        ),
        (
            "cx without tag on auto",
            "/v1/connectors/dialogflow-cx",
            json_h.clone(),
            "{\"sessionInfo\": {\"session\": \"projects/p/sessions/s\"}}",
            422,
            "invalid_value",
        ),
        (
            "cx without session",
            "/v1/connectors/dialogflow-cx/start",
            json_h.clone(),
            "{}",
            400,
            "missing_field",
        ),
        (
            "body over 256 KiB",
            "/v1/connectors/dialogflow-cx/start",
            json_h.clone(),
            &huge,
            413,
            "payload_too_large",
        ),
    ];
    for (what, path, headers, body, status, code) in cases {
        let r = app.send_raw(path, &headers, body.to_owned()).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text);
        assert_eq!(r.json()["error"]["code"], code, "{what}: {}", r.text);
    }
    assert_eq!(app.count_calls().await, 0, "nothing written");
    // One unreadable CX parameter never loses the rest of the end: it is left out and named.
    let cx_end = app
        .send_raw(
            "/v1/connectors/dialogflow-cx/end",
            &json_h,
            "{\"sessionInfo\": {\"session\": \"s\", \"parameters\": {\"customer_ref\": \"a b\", \"intent\": \"billing\", \"bad name\": 1}}}",
        )
        .await;
    assert_eq!(cx_end.status, StatusCode::OK, "{}", cx_end.text);
    assert_eq!(
        cx_end.json()["sessionInfo"]["parameters"]["sticky_skipped"],
        "customer_ref,bad name"
    );
    let bad_ext = app
        .send_raw(
            "/v1/connectors/dialogflow-cx/end",
            &json_h,
            "{\"sessionInfo\": {\"session\": \"s-ext\", \"parameters\": {\"ext_crm id\": \"x\", \"intent\": \"billing\"}}}",
        )
        .await;
    assert_eq!(bad_ext.status, StatusCode::OK, "{}", bad_ext.text);
    assert_eq!(
        bad_ext.json()["sessionInfo"]["parameters"]["sticky_skipped"],
        "ext_crm id"
    );
    assert_eq!(app.get("/v1/calls/s").await.body["intent"], "billing");
    // Twilio sends Basic credentials from its webhook URL only after a challenge.
    let challenged = app
        .client
        .post("/v1/connectors/twilio/start?next=https%3A%2F%2Fa.b")
        .body("CallSid=CA1")
        .send()
        .await;
    let header = challenged
        .0
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.starts_with("Basic realm="), "{header}");
}

fn connect_event_str() -> String {
    connect_event("c-9", json!({"sticky_event": "later"}))
}

async fn connector_tenants_are_isolated(app: TestApp) {
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    app.send_raw(
        &start,
        &form_headers(&app.key),
        voice("CA31", "+14155551234"),
    )
    .await;
    app.end_call(json!({"call_id": "CA31", "customer_ref": "ours"}))
        .await;
    let other = app.new_tenant("other").await;
    // The other tenant's Twilio token does not make our unsigned webhooks fail...
    app.send(
        "PUT",
        "/v1/connectors/twilio/settings",
        Some(&other),
        Some(json!({"auth_token": "0123456789abcdef0123456789abcdef"}).to_string()),
    )
    .await;
    let ours = app
        .send_raw(
            &start,
            &form_headers(&app.key),
            voice("CA32", "+14155551234"),
        )
        .await;
    assert_eq!(ours.status, StatusCode::OK);
    assert!(ours.text.contains("sticky_customer_ref=ours"));
    // ...and the other tenant, signing nothing, is refused, and never sees our customer.
    let theirs = app
        .send_raw(&start, &form_headers(&other), voice("CA33", "+14155551234"))
        .await;
    assert_eq!(theirs.status, StatusCode::FORBIDDEN);
    let h = json_headers(&other);
    let cx_start = app
        .send_raw(
            "/v1/connectors/dialogflow-cx/start",
            &h,
            cx("s9", "sticky-start", json!({})),
        )
        .await;
    assert_eq!(
        cx_start.json()["sessionInfo"]["parameters"]["sticky_band"],
        "low"
    );
}

async fn twilio_outbound_calls_child_legs_context_opt_in_and_subaccounts(app: TestApp) {
    let h = form_headers(&app.key);
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    // A call the business placed: the customer is the called party.
    let outbound = form(&[
        ("CallSid", "CA40"),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-api"),
        ("From", "+18005550100"),
        ("To", "+14155550177"),
    ]);
    let r = app.send_raw(&start, &h, outbound).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.get("/v1/calls/CA40").await.body["ani"], "+14155550177");

    // An inbound call <Dial>s an agent: the child leg continues the call, and the agent
    // hanging up does not end it.
    app.send_raw(&start, &h, voice("CA41", "+14155551234"))
        .await;
    let child = form(&[
        ("CallSid", "CA42"),
        ("CallStatus", "in-progress"),
        ("Direction", "outbound-dial"),
        ("From", "+14155551234"),
        ("To", "+14155550199"),
        ("ParentCallSid", "CA41"),
    ]);
    let r = app.send_raw(&start, &h, child).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("sticky_call_id=CA41"), "{}", r.text);
    assert_eq!(
        app.get("/v1/calls/CA42").await.status,
        StatusCode::NOT_FOUND
    );
    let child_done = form(&[
        ("CallSid", "CA42"),
        ("CallStatus", "completed"),
        ("Direction", "outbound-dial"),
        ("From", "+14155551234"),
        ("To", "+14155550199"),
        ("ParentCallSid", "CA41"),
    ]);
    let r = app
        .send_raw("/v1/connectors/twilio/end", &h, child_done)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/calls/CA41").await.body["status"],
        "in_progress"
    );
    assert_eq!(app.count_calls().await, 2);
    app.send_raw(
        "/v1/connectors/twilio/end",
        &h,
        status("CA41", "+14155551234", "completed"),
    )
    .await;
    assert_eq!(app.get("/v1/calls/CA41").await.body["status"], "ended");
    app.end_call(json!({"call_id": "CA41", "customer_ref": "tw-1", "variables": {"name": "Ana"}}))
        .await;

    // By default the redirect carries ids, band and confidence, never a name.
    let plain = app
        .send_raw(&start, &h, voice("CA43", "+14155551234"))
        .await;
    assert!(
        plain.text.contains("sticky_customer_ref=tw-1"),
        "{}",
        plain.text
    );
    assert!(!plain.text.contains("Ana"), "{}", plain.text);
    let full = app
        .send_raw(
            &format!("{start}&context=full"),
            &h,
            voice("CA44", "+14155551234"),
        )
        .await;
    assert!(full.text.contains("sticky_var_name=Ana"), "{}", full.text);
    // The app reads the full context by starting the same call through the REST API: a
    // repeated start, answered again without counting a new call.
    let calls = app.count_calls().await;
    let again = app.start_call(json!({"call_id": "CA43"})).await;
    assert_eq!(again["context"]["variables"]["name"], "Ana", "{again}");
    assert_eq!(app.count_calls().await, calls);

    // A subaccount's webhooks are signed with the subaccount's own token.
    let (main, sub_token) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    );
    let sub = "ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let r = app
        .send(
            "PUT",
            "/v1/connectors/twilio/settings",
            Some(&app.key),
            Some(json!({"auth_token": main, "subaccount_tokens": {sub: sub_token}}).to_string()),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let body = form(&[
        ("AccountSid", sub),
        ("CallSid", "CA45"),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", "+14155551234"),
        ("To", "+18005550100"),
    ]);
    let url = format!("http://{HOST}{start}");
    let params = serde_urlencoded_pairs(&body);
    for (token, expected) in [(main, StatusCode::FORBIDDEN), (sub_token, StatusCode::OK)] {
        let mut signed = form_headers(&app.key);
        signed.push((
            "x-twilio-signature",
            signature::compute(token, &url, &params),
        ));
        let r = app.send_raw(&start, &signed, body.clone()).await;
        assert_eq!(r.status, expected, "{}", r.text);
    }
}

async fn amazon_connect_transfers_are_one_call_and_full_attribute_events_are_accepted(
    app: TestApp,
) {
    let h = json_headers(&app.key);
    app.send_raw(
        "/v1/connectors/amazon-connect/start",
        &h,
        connect_event("leg-1", json!({})),
    )
    .await;
    // The agent transfers: the second leg's flow runs with the chain's InitialContactId.
    let mut leg2: Value = serde_json::from_str(&connect_event("leg-2", json!({}))).unwrap();
    leg2["Details"]["ContactData"]["InitialContactId"] = json!("leg-1");
    leg2["Details"]["ContactData"]["PreviousContactId"] = json!("leg-1");
    leg2["Details"]["ContactData"]["InitiationMethod"] = json!("TRANSFER");
    // A contact may carry 32 KB of attributes; the event that carries them is accepted, also
    // when the forwarding Lambda's JSON escapes every non-ASCII character (Python's default),
    // which triples accented text.
    let mut attributes = serde_json::Map::new();
    for i in 0..32 {
        attributes.insert(format!("attr_{i:02}"), json!("é".repeat(495)));
    }
    leg2["Details"]["ContactData"]["Attributes"] = Value::Object(attributes);
    let body = leg2.to_string().replace('é', "\\u00e9");
    assert!(body.len() > 64 * 1024, "{}", body.len());
    let r = app
        .send_raw("/v1/connectors/amazon-connect/start", &h, body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["sticky_call_id"], "leg-1");
    assert_eq!(
        app.count_calls().await,
        1,
        "a transferred leg is the same call"
    );

    let event = |contact: &str, extra: Value| {
        let mut detail = json!({"eventType": "DISCONNECTED", "contactId": contact,
            "initialContactId": "leg-1", "channel": "VOICE", "initiationMethod": "INBOUND"});
        for (k, v) in extra.as_object().unwrap() {
            detail[k] = v.clone();
        }
        json!({"version": "0", "id": "e", "detail-type": "Amazon Connect Contact Event",
               "source": "aws.connect", "detail": detail})
        .to_string()
    };
    // The first leg's disconnect, transferred on, does not end the call.
    let r = app
        .send_raw(
            "/v1/connectors/amazon-connect",
            &h,
            event("leg-1", json!({"nextContactId": "leg-2", "transferCompletedTimestamp": "2026-12-05T10:00:00Z"})),
        )
        .await;
    assert_eq!(
        r.json()["sticky_ignored"],
        "contact transferred; the call goes on"
    );
    assert_eq!(
        app.get("/v1/calls/leg-1").await.body["status"],
        "in_progress"
    );
    // The last leg's disconnect does.
    app.send_raw(
        "/v1/connectors/amazon-connect",
        &h,
        event(
            "leg-2",
            json!({"previousContactId": "leg-1", "initiationMethod": "TRANSFER"}),
        ),
    )
    .await;
    assert_eq!(app.get("/v1/calls/leg-1").await.body["status"], "ended");
    assert_eq!(app.count_calls().await, 1);

    // Two variables whose names reduce to one attribute key both come back, under two keys.
    app.end_call(json!({"call_id": "leg-1", "customer_ref": "ac-1",
        "variables": {"loyalty.tier": "gold", "loyalty_tier": "silver"}}))
        .await;
    let next = app
        .send_raw(
            "/v1/connectors/amazon-connect/start",
            &h,
            connect_event("c-next", json!({})),
        )
        .await;
    let map = next.json();
    assert_eq!(map["sticky_var_loyalty_tier"], "silver", "{}", next.text);
    assert_eq!(map["sticky_var_loyalty_tier_2"], "gold", "{}", next.text);
}

async fn twilio_status_callbacks_and_get_webhooks_are_signed_too(app: TestApp) {
    let token = "0123456789abcdef0123456789abcdef";
    app.send(
        "PUT",
        "/v1/connectors/twilio/settings",
        Some(&app.key),
        Some(json!({"auth_token": token}).to_string()),
    )
    .await;
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    let mut signed = form_headers(&app.key);
    let body = voice("CA50", "+14155551234");
    signed.push((
        "x-twilio-signature",
        signature::compute(
            token,
            &format!("http://{HOST}{start}"),
            &serde_urlencoded_pairs(&body),
        ),
    ));
    assert_eq!(
        app.send_raw(&start, &signed, body).await.status,
        StatusCode::OK
    );

    // The status callback: unsigned or forged is refused and changes nothing; signed ends.
    let end = "/v1/connectors/twilio/end";
    let body = status("CA50", "+14155551234", "completed");
    let params = serde_urlencoded_pairs(&body);
    let r = app
        .send_raw(end, &form_headers(&app.key), body.clone())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let mut forged = form_headers(&app.key);
    forged.push((
        "x-twilio-signature",
        signature::compute(
            token,
            &format!("http://{HOST}/v1/connectors/twilio/start"),
            &params,
        ),
    ));
    assert_eq!(
        app.send_raw(end, &forged, body.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/calls/CA50").await.body["status"],
        "in_progress"
    );
    let mut signed = form_headers(&app.key);
    signed.push((
        "x-twilio-signature",
        signature::compute(token, &format!("http://{HOST}{end}"), &params),
    ));
    let r = app.send_raw(end, &signed, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.get("/v1/calls/CA50").await.body["status"], "ended");

    // A webhook configured for GET is signed over its whole URL, parameters included.
    let get_path = format!(
        "{start}&AccountSid=AC0123456789abcdef0123456789abcdef&CallSid=CA51&CallStatus=ringing&From=%2B14155551234&To=%2B18005550100"
    );
    let get_headers = |signature: Option<String>| {
        let mut h = vec![
            ("authorization", basic(&app.key)),
            ("host", HOST.to_owned()),
        ];
        if let Some(s) = signature {
            h.push(("x-twilio-signature", s));
        }
        h
    };
    let r = app.get_raw(&get_path, &get_headers(None)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let tampered = signature::compute(
        token,
        &format!("http://{HOST}{}", get_path.replace("CA51", "CA52")),
        &[],
    );
    let r = app.get_raw(&get_path, &get_headers(Some(tampered))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/v1/calls/CA51").await.status,
        StatusCode::NOT_FOUND
    );
    let good = signature::compute(token, &format!("http://{HOST}{get_path}"), &[]);
    let r = app.get_raw(&get_path, &get_headers(Some(good))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.get("/v1/calls/CA51").await.status, StatusCode::OK);
}

async fn a_platform_secret_survives_a_restart_and_nothing_else_opens_it(app: TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let token = "0123456789abcdef0123456789abcdef";
    app.send(
        "PUT",
        "/v1/connectors/twilio/settings",
        Some(&app.key),
        Some(json!({"auth_token": token}).to_string()),
    )
    .await;
    let other = app.new_tenant("other").await;
    let start = format!("/v1/connectors/twilio/start?next={NEXT}");
    let signed = |key: &str, call: &str| {
        let body = voice(call, "+14155551234");
        let mut h = form_headers(key);
        h.push((
            "x-twilio-signature",
            signature::compute(
                token,
                &format!("http://{HOST}{start}"),
                &serde_urlencoded_pairs(&body),
            ),
        ));
        (h, body)
    };

    // After a restart, the stored token decrypts and verifies signatures.
    let app = app.restarted().await;
    let (h, body) = signed(&app.key, "CA60");
    let r = app.send_raw(&start, &h, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (h, body) = signed(&app.key, "CA61");
    let unsigned: Vec<_> = h
        .into_iter()
        .filter(|(k, _)| *k != "x-twilio-signature")
        .collect();
    assert_eq!(
        app.send_raw(&start, &unsigned, body).await.status,
        StatusCode::FORBIDDEN
    );

    // The row copied to another tenant does not open for it (the tenant is bound into the
    // ciphertext): its webhooks are refused, not let through unsigned.
    let db = app.state.engine.db();
    let backend = db.get_database_backend();
    db.execute_raw(Statement::from_string(
        backend,
        "INSERT INTO connector_settings (tenant_id, platform, nonce, ciphertext, updated_at) \
         SELECT (SELECT id FROM tenants WHERE name = 'other'), platform, nonce, ciphertext, updated_at \
         FROM connector_settings",
    ))
    .await
    .expect("copy the row");
    let (h, body) = signed(&other, "CA62");
    let r = app.send_raw(&start, &h, body).await;
    assert!(
        r.status.is_server_error(),
        "a copied secret must not open: {} {}",
        r.status,
        r.text
    );
    assert_eq!(r.json()["error"]["code"], "internal_error");
    assert!(!r.text.contains(token));

    // A tampered ciphertext does not open either.
    let app = app.restarted().await;
    let db = app.state.engine.db();
    db.execute_raw(Statement::from_string(
        backend,
        "UPDATE connector_settings SET ciphertext = 'AAAA' || ciphertext \
         WHERE tenant_id = (SELECT id FROM tenants WHERE name = 'default')",
    ))
    .await
    .expect("tamper");
    let (h, body) = signed(&app.key, "CA63");
    let r = app.send_raw(&start, &h, body).await;
    assert!(
        r.status.is_server_error(),
        "a tampered secret must not open: {}",
        r.text
    );

    // Under another server key nothing opens.
    let stopped = app.stop();
    let mut settings = stopped.settings();
    settings.secret_key = Some("ab".repeat(32));
    let app = stopped.start_with(settings).await;
    let (h, body) = signed(&other, "CA64");
    let r = app.send_raw(&start, &h, body).await;
    assert!(
        r.status.is_server_error(),
        "another server key must not open it: {}",
        r.text
    );
    assert_eq!(
        app.get("/v1/calls/CA63").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/v1/calls/CA64").await.status,
        StatusCode::NOT_FOUND
    );
}
