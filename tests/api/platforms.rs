//! The five platforms added after the first three (Genesys Cloud, NICE CXone, Five9, Voiceflow,
//! Amazon Lex V2), end to end: each platform's native request (for the admin-built ones, the
//! template its guide gives) starts and ends calls, odd number formats are stored as E.164, a
//! repeat caller is recognised in the platform's own answer, bad payloads get our error body,
//! and tenants stay apart.

use poem::http::StatusCode;
use serde_json::{Value, json};
use sticky_calls_tests::TestApp;

backend_tests!(
    a_genesys_caller_is_recognised_with_every_output_present,
    a_genesys_customer_end_event_ends_the_call_and_outbound_calls_key_the_called_party,
    a_cxone_transfer_is_one_call_and_the_caller_is_recognised,
    a_five9_connector_authenticates_by_url_and_recognises_the_caller,
    voiceflow_webhooks_and_api_steps_remember_phone_and_web_callers,
    a_lex_bot_gets_the_context_in_session_attributes_and_keeps_its_dialog,
    platform_payload_errors_are_4xx_with_our_error_body,
    the_new_platforms_keep_tenants_apart,
    authorization_schemes_are_read_in_any_case_on_every_route,
);

fn bearer(key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {key}")),
        ("content-type", "application/json".into()),
    ]
}

fn basic(key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("five9:{key}"))
    )
}

async fn call(app: &TestApp, id: &str) -> Value {
    let r = app.get(&format!("/v1/calls/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "call {id}: {}", r.body);
    r.body
}

// ---- Genesys Cloud ----

fn genesys(conversation: &str, extra: Value) -> String {
    let mut body = json!({
        "conversationId": conversation,
        "ani": "tel:+14155550142",
        "dnis": "tel:+18005550100",
        "externalContactId": "",
        "customerId": "",
        "language": "en-US"
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body.to_string()
}

async fn a_genesys_caller_is_recognised_with_every_output_present(app: TestApp) {
    let h = bearer(&app.key);
    let url = "/v1/connectors/genesys-cloud/start?vars=tier,name";
    let first = app.send_raw(url, &h, genesys("g-1", json!({}))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let a = first.json();
    assert_eq!(a["sticky_band"], "low");
    assert_eq!(a["sticky_known"], false);
    assert_eq!(a["sticky_call_count"], 0);
    assert_eq!(
        a["sticky_var_tier"], "",
        "a declared variable is always present"
    );
    assert_eq!(call(&app, "g-1").await["ani"], "+14155550142");

    let end = app
        .send_raw(
            "/v1/connectors/genesys-cloud/end",
            &h,
            genesys(
                "g-1",
                json!({"customerRef": "acme-42", "intent": "refund_request", "intentStatus": "open",
                       "summary": "Refund for order 12345", "wrapupCode": "Refund", "var_tier": "gold",
                       "addedByTheAdmin": 7}),
            ),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.text);
    assert_eq!(
        end.json(),
        json!({"sticky_call_id": "g-1", "sticky_customer_ref": "acme-42", "sticky_provisional": false})
    );

    // The second call comes in as a SIP URI with parameters: the same number.
    let second = app
        .send_raw(
            url,
            &h,
            genesys(
                "g-2",
                json!({"ani": "sip:+14155550142@edge.example.com;user=phone"}),
            ),
        )
        .await;
    let a = second.json();
    assert_eq!(a["sticky_customer_ref"], "acme-42", "{}", second.text);
    assert_eq!(a["sticky_band"], "high");
    assert_eq!(a["sticky_known"], true);
    assert_eq!(a["sticky_action"], "greet");
    assert!(a["sticky_confidence"].as_f64().unwrap() > 0.8);
    assert_eq!(a["sticky_call_count"], 1);
    assert_eq!(a["sticky_open_intents"], "refund_request");
    assert_eq!(a["sticky_last_summary"], "Refund for order 12345");
    assert_eq!(a["sticky_var_tier"], "gold");
    assert_eq!(a["sticky_var_wrapup_code"], "Refund");
    assert_eq!(
        a["sticky_var_name"], "",
        "declared, not saved: present and empty"
    );
    for (key, _) in sticky_connector_genesys_cloud::START_OUTPUTS {
        assert!(a.get(*key).is_some(), "{key} is always present");
    }
}

async fn a_genesys_customer_end_event_ends_the_call_and_outbound_calls_key_the_called_party(
    app: TestApp,
) {
    let h = bearer(&app.key);
    let start = app
        .send_raw(
            "/v1/connectors/genesys-cloud",
            &h,
            genesys(
                "g-out",
                json!({"event": "start", "direction": "outbound", "ani": "tel:+18005550100", "dnis": "tel:+14155550177"}),
            ),
        )
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    let stored = call(&app, "g-out").await;
    assert_eq!(
        stored["ani"], "+14155550177",
        "the customer is the called party"
    );
    assert_eq!(stored["status"], "in_progress");

    let event = json!({
        "version": "0", "id": "e-1",
        "detail-type": "v2.detail.events.conversation.{id}.customer.end",
        "source": "aws.partner/genesys.com/cloud/org/sticky",
        "detail": {
            "topicName": "v2.detail.events.conversation.g-out.customer.end",
            "version": "2",
            "eventBody": {"conversationId": "g-out", "mediaType": "VOICE", "direction": "OUTBOUND",
                          "ani": "tel:+18005550100", "dnis": "tel:+14155550177", "disconnectType": "ENDPOINT"},
            "metadata": {"CorrelationId": "c-1"}
        }
    });
    let r = app
        .send_raw("/v1/connectors/genesys-cloud", &h, event.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(call(&app, "g-out").await["status"], "ended");

    // A chat's end is acknowledged and changes nothing.
    let mut chat = event.clone();
    chat["detail"]["eventBody"]["mediaType"] = json!("CHAT");
    chat["detail"]["eventBody"]["conversationId"] = json!("g-chat");
    let r = app
        .send_raw("/v1/connectors/genesys-cloud/end", &h, chat.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["sticky_ignored"], "not a voice conversation");
    assert_eq!(
        app.get("/v1/calls/g-chat").await.status,
        StatusCode::NOT_FOUND
    );
}

// ---- NICE CXone ----

async fn a_cxone_transfer_is_one_call_and_the_caller_is_recognised(app: TestApp) {
    let h = bearer(&app.key);
    let first = app
        .send_raw(
            "/v1/connectors/nice-cxone/start",
            &h,
            json!({"contactId": "6001", "masterContactId": "", "ani": "4155550142", "dnis": "8005550100",
                   "skillName": "Billing_IB", "busNo": "4600123"})
            .to_string(),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json()["sticky_band"], "low");
    let stored = call(&app, "6001").await;
    assert_eq!(stored["ani"], "+14155550142", "ten national digits");

    // The transferred leg names its master contact: the same call, not a second one.
    let leg = app
        .send_raw(
            "/v1/connectors/nice-cxone/start",
            &h,
            json!({"contactId": "6002", "masterContactId": "6001", "ani": "4155550142", "dnis": "8005550100"})
                .to_string(),
        )
        .await;
    assert_eq!(leg.json()["sticky_call_id"], "6001", "{}", leg.text);
    assert_eq!(
        app.get("/v1/calls/6002").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.count_calls().await, 1);

    let end = app
        .send_raw(
            "/v1/connectors/nice-cxone",
            &h,
            json!({"event": "end", "contactId": "6002", "masterContactId": "6001", "ani": "4155550142",
                   "customerRef": "cx-7", "intent": "billing_question", "intentStatus": "Resolved",
                   "summary": "Explained the November bill", "causeCode": "1", "var_plan": "premium"})
            .to_string(),
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.text);
    assert_eq!(end.json()["sticky_customer_ref"], "cx-7");
    let ended = call(&app, "6001").await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["intent"], "billing_question");

    let second = app
        .send_raw(
            "/v1/connectors/nice-cxone/start",
            &h,
            json!({"contactId": "6100", "ani": "+1 (415) 555-0142", "dnis": "8005550100"})
                .to_string(),
        )
        .await;
    let a = second.json();
    assert_eq!(a["sticky_customer_ref"], "cx-7", "{}", second.text);
    assert_eq!(a["sticky_band"], "high");
    assert_eq!(a["sticky_var_plan"], "premium");
    assert_eq!(a["sticky_var_cause_code"], "1");
    assert!(a.as_object().unwrap().values().all(Value::is_string));

    // An international caller without `+`.
    app.send_raw(
        "/v1/connectors/nice-cxone/start",
        &h,
        json!({"contactId": "6200", "ani": "442079460000"}).to_string(),
    )
    .await;
    assert_eq!(call(&app, "6200").await["ani"], "+442079460000");
}

// ---- Five9 ----

async fn a_five9_connector_authenticates_by_url_and_recognises_the_caller(app: TestApp) {
    // OnCallAccepted as a GET with the key as a parameter (no headers at all).
    let start = format!(
        "/v1/connectors/five9/start?key={}&call_id=300000000000123&ANI=4155550142&DNIS=8005550100&call_type=Inbound&crm_id=%40Customer.crm_id%40",
        app.key
    );
    let first = app.get_raw(&start, &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.json()["sticky_band"], "low");
    let stored = call(&app, "300000000000123").await;
    assert_eq!(stored["ani"], "+14155550142");
    assert_eq!(stored["platform"], "five9");

    // OnCallDispositioned as a form POST with Basic credentials from the URL.
    let form = "call_id=300000000000123&ANI=4155550142&DNIS=8005550100&customer_ref=f9-1&intent=refund_request&intent_status=open&disposition_name=Callback%20Requested&comments=Wants%20a%20call%20back&var_order_id=77";
    let end = app
        .send_raw(
            "/v1/connectors/five9/end",
            &[
                ("authorization", basic(&app.key)),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            form,
        )
        .await;
    assert_eq!(end.status, StatusCode::OK, "{}", end.text);
    assert_eq!(end.json()["sticky_customer_ref"], "f9-1");

    // An IVR Query module posting the key in the form body.
    let second = app
        .send_raw(
            "/v1/connectors/five9/start",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            format!(
                "key={}&call_id=300000000000200&ANI=14155550142&DNIS=%40Call.DNIS%40",
                app.key
            ),
        )
        .await;
    let a = second.json();
    assert_eq!(a["sticky_customer_ref"], "f9-1", "{}", second.text);
    assert_eq!(a["sticky_band"], "high");
    assert_eq!(a["sticky_var_disposition"], "Callback Requested");
    assert_eq!(a["sticky_last_summary"], "Wants a call back");
    assert_eq!(
        call(&app, "300000000000200").await["dnis"],
        Value::Null,
        "a placeholder is no number"
    );

    // A wrong key is refused before anything is read.
    let wrong = app
        .get_raw("/v1/connectors/five9/start?key=sc_wrong&call_id=1", &[])
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"]["code"], "unauthorized");
    // The key parameter is Five9's alone.
    let elsewhere = app
        .send_raw(
            &format!("/v1/connectors/nice-cxone/start?key={}", app.key),
            &[("content-type", "application/json".into())],
            json!({"contactId": "1"}).to_string(),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
}

// ---- Voiceflow ----

fn vf_event(kind: &str, call_sid: Option<&str>, user: &str, platform: &str) -> String {
    let metadata = match call_sid {
        Some(sid) => {
            json!({"callSid": sid, "callType": "inbound", "userNumber": user, "agentNumber": "+18005550100"})
        }
        None => json!({}),
    };
    json!({
        "type": kind,
        "data": {"userID": user, "projectID": "p1", "environmentID": "e1", "startTime": 1795082400000_i64,
                 "platform": platform, "metadata": metadata},
        "time": 1795082400123_i64,
        "resource": "project-p1"
    })
    .to_string()
}

async fn voiceflow_webhooks_and_api_steps_remember_phone_and_web_callers(app: TestApp) {
    let h = bearer(&app.key);
    let url = "/v1/connectors/voiceflow";
    let start = app
        .send_raw(
            url,
            &h,
            vf_event(
                "runtime.call.start",
                Some("CAvf1"),
                "+14155550142",
                "twilio",
            ),
        )
        .await;
    assert_eq!(start.status, StatusCode::OK, "{}", start.text);
    assert_eq!(start.json()["sticky_band"], "low");
    // The API step at the end of the flow says who it was and what was agreed.
    let step = app
        .send_raw(
            "/v1/connectors/voiceflow/end",
            &h,
            json!({"user_id": "+14155550142", "call_id": "CAvf1", "customer_ref": "vf-1",
                   "intent": "book_appointment", "intent_status": "resolved",
                   "summary": "Booked Tuesday 10am", "var_name": "Ana"})
            .to_string(),
        )
        .await;
    assert_eq!(step.status, StatusCode::OK, "{}", step.text);
    let hang_up = app
        .send_raw(
            url,
            &h,
            vf_event("runtime.call.end", Some("CAvf1"), "+14155550142", "twilio"),
        )
        .await;
    assert_eq!(hang_up.status, StatusCode::OK, "{}", hang_up.text);
    assert_eq!(call(&app, "CAvf1").await["status"], "ended");
    let ignored = app
        .send_raw(
            url,
            &h,
            vf_event("runtime.session.start", None, "+14155550142", "twilio"),
        )
        .await;
    assert_eq!(ignored.json()["ignored"], "not a call start or end");

    // The next call: an API step start inside the flow, keyed by {user_id} and {timestamp}.
    let again = app
        .send_raw(
            "/v1/connectors/voiceflow/start",
            &h,
            json!({"user_id": "+14155550142", "timestamp": "1795090000"}).to_string(),
        )
        .await;
    let a = again.json();
    assert_eq!(a["sticky_customer_ref"], "vf-1", "{}", again.text);
    assert_eq!(a["sticky_band"], "high");
    assert_eq!(a["sticky_var_name"], "Ana");
    assert_eq!(a["sticky_call_id"], "+14155550142:1795090000");

    // Twilio's anonymous sentinel is a withheld caller.
    app.send_raw(
        url,
        &h,
        vf_event("runtime.call.start", Some("CAvf2"), "+266696687", "twilio"),
    )
    .await;
    let withheld = call(&app, "CAvf2").await;
    assert_eq!(withheld["ani"], Value::Null);
    assert_eq!(withheld["ani_withheld"], true);

    // Web voice: no number, the user id is the identity.
    let web = |start: i64| {
        json!({"type": "runtime.call.start",
               "data": {"userID": "vf-web-7f3a", "projectID": "p1", "startTime": start, "platform": "web-voice", "metadata": {}},
               "resource": "project-p1"})
        .to_string()
    };
    app.send_raw(url, &h, web(1)).await;
    app.end_call(json!({"call_id": "vf-web-7f3a:1", "customer_ref": "web-9"}))
        .await;
    let back = app.send_raw(url, &h, web(2)).await;
    assert_eq!(back.json()["sticky_customer_ref"], "web-9", "{}", back.text);

    // A webhook URL field that refuses credentials: the key in the query instead.
    let json_only = [("content-type", "application/json".to_owned())];
    let by_query = app
        .send_raw(&format!("{url}?key={}", app.key), &json_only, web(3))
        .await;
    assert_eq!(by_query.status, StatusCode::OK, "{}", by_query.text);
    assert_eq!(by_query.json()["sticky_customer_ref"], "web-9");
    let wrong = app
        .send_raw(&format!("{url}?key=sc_wrong"), &json_only, web(4))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text);
    // Another tenant's key finds nothing of this one's.
    let other = app.new_tenant("vf-other").await;
    let theirs = app
        .send_raw(&format!("{url}?key={other}"), &json_only, web(5))
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.text);
    assert_eq!(theirs.json()["sticky_customer_ref"], "", "{}", theirs.text);
}

// ---- Amazon Lex V2 ----

fn lex(source: &str, session: &str, attributes: Value, intent_state: &str) -> String {
    json!({
        "messageVersion": "1.0",
        "invocationSource": source,
        "inputMode": "Speech",
        "sessionId": session,
        "inputTranscript": "check my order one two three",
        "bot": {"id": "B1", "name": "OrderBot", "localeId": "en_US", "version": "DRAFT", "aliasId": "TSTALIASID", "aliasName": "Test"},
        "requestAttributes": {"x-amz-lex:channels:platform": "Connect"},
        "sessionState": {
            "sessionAttributes": attributes,
            "activeContexts": [],
            "intent": {"name": "CheckOrder", "state": intent_state, "confirmationState": "None",
                       "slots": {"OrderNumber": {"shape": "Scalar", "value": {"originalValue": "123", "interpretedValue": "123", "resolvedValues": []}}}}
        }
    })
    .to_string()
}

async fn a_lex_bot_gets_the_context_in_session_attributes_and_keeps_its_dialog(app: TestApp) {
    let h = bearer(&app.key);
    let url = "/v1/connectors/amazon-lex";
    let dialog = app
        .send_raw(
            url,
            &h,
            lex(
                "DialogCodeHook",
                "lex-1",
                json!({"CustomerNumber": "+14155550142", "flow": "main"}),
                "InProgress",
            ),
        )
        .await;
    assert_eq!(dialog.status, StatusCode::OK, "{}", dialog.text);
    let d = dialog.json();
    assert_eq!(d["sessionState"]["dialogAction"]["type"], "Delegate");
    assert_eq!(d["sessionState"]["intent"]["name"], "CheckOrder");
    assert_eq!(d["sessionState"]["intent"]["state"], "InProgress");
    assert_eq!(
        d["sessionState"]["sessionAttributes"]["flow"], "main",
        "the bot's own attributes stay"
    );
    assert_eq!(d["sessionState"]["sessionAttributes"]["sticky_band"], "low");
    // Every turn runs the dialog hook: the call is still one call.
    app.send_raw(
        url,
        &h,
        lex(
            "DialogCodeHook",
            "lex-1",
            json!({"CustomerNumber": "+14155550142"}),
            "InProgress",
        ),
    )
    .await;
    assert_eq!(app.count_calls().await, 1);

    let fulfil = app
        .send_raw(
            url,
            &h,
            lex(
                "FulfillmentCodeHook",
                "lex-1",
                json!({"CustomerNumber": "+14155550142", "customer_ref": "lex-42"}),
                "ReadyForFulfillment",
            ),
        )
        .await;
    assert_eq!(fulfil.status, StatusCode::OK, "{}", fulfil.text);
    let f = fulfil.json();
    assert_eq!(f["sessionState"]["dialogAction"]["type"], "Close");
    assert_eq!(f["sessionState"]["intent"]["state"], "Fulfilled");
    assert_eq!(
        f["sessionState"]["sessionAttributes"]["sticky_customer_ref"],
        "lex-42"
    );
    let ended = call(&app, "lex-1").await;
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["intent"], "CheckOrder");

    // The next session, from Genesys with a tel: URI, is recognised.
    let next = app
        .send_raw(
            url,
            &h,
            lex(
                "DialogCodeHook",
                "lex-2",
                json!({"ani": "tel:+14155550142"}),
                "InProgress",
            ),
        )
        .await;
    let attrs = &next.json()["sessionState"]["sessionAttributes"];
    assert_eq!(attrs["sticky_customer_ref"], "lex-42", "{}", next.text);
    assert_eq!(attrs["sticky_band"], "high");
    assert_eq!(attrs["sticky_var_OrderNumber"], "123");
    assert!(attrs.as_object().unwrap().values().all(Value::is_string));
}

// ---- Errors and tenants ----

/// What, where, headers, body, and the status, code and field expected.
type BadCase<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, String)>,
    String,
    StatusCode,
    &'a str,
    Option<&'a str>,
);

async fn platform_payload_errors_are_4xx_with_our_error_body(app: TestApp) {
    let h = bearer(&app.key);
    let form = vec![
        ("authorization", format!("Bearer {}", app.key)),
        (
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        ),
    ];
    let cases: Vec<BadCase> = vec![
        ("genesys without a conversation", "/v1/connectors/genesys-cloud/start", h.clone(),
         json!({"ani": "tel:+14155550142"}).to_string(), StatusCode::BAD_REQUEST, "missing_field", Some("conversationId")),
        ("genesys number for a string", "/v1/connectors/genesys-cloud/start", h.clone(),
         json!({"conversationId": 12345}).to_string(), StatusCode::BAD_REQUEST, "invalid_type", Some("conversationId")),
        ("genesys array body", "/v1/connectors/genesys-cloud/start", h.clone(),
         "[{\"conversationId\": \"x\"}]".into(), StatusCode::BAD_REQUEST, "invalid_payload", None),
        ("genesys bad intent status", "/v1/connectors/genesys-cloud/end", h.clone(),
         json!({"conversationId": "g", "intentStatus": "done"}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", Some("intentStatus")),
        ("cxone not JSON", "/v1/connectors/nice-cxone/start", h.clone(),
         "contactId=1".into(), StatusCode::BAD_REQUEST, "malformed_payload", None),
        ("cxone ani as an object", "/v1/connectors/nice-cxone/start", h.clone(),
         json!({"contactId": "1", "ani": {"n": 1}}).to_string(), StatusCode::BAD_REQUEST, "invalid_type", Some("ani")),
        ("cxone summary as a number", "/v1/connectors/nice-cxone/end", h.clone(),
         json!({"contactId": 1, "summary": 5}).to_string(), StatusCode::BAD_REQUEST, "invalid_type", Some("summary")),
        ("five9 without a call id", "/v1/connectors/five9/start", form.clone(),
         "ANI=4155550142".into(), StatusCode::BAD_REQUEST, "missing_field", Some("call_id")),
        ("five9 plain text", "/v1/connectors/five9/start", vec![("authorization", format!("Bearer {}", app.key)), ("content-type", "text/plain".into())],
         "call_id=1".into(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None),
        ("voiceflow unknown shape", "/v1/connectors/voiceflow", h.clone(),
         json!({"hello": "world"}).to_string(), StatusCode::BAD_REQUEST, "invalid_payload", None),
        ("voiceflow event without a user", "/v1/connectors/voiceflow", h.clone(),
         json!({"type": "runtime.call.start", "data": {"platform": "web-voice"}}).to_string(), StatusCode::BAD_REQUEST, "missing_field", Some("data.userID")),
        ("lex without a session", "/v1/connectors/amazon-lex", h.clone(),
         json!({"invocationSource": "DialogCodeHook", "sessionState": {"intent": {"name": "X"}}}).to_string(), StatusCode::BAD_REQUEST, "missing_field", Some("sessionId")),
        ("lex unknown source", "/v1/connectors/amazon-lex", h.clone(),
         json!({"invocationSource": "Other", "sessionId": "s", "sessionState": {"intent": {"name": "X"}}}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", Some("invocationSource")),
        ("lex number attribute", "/v1/connectors/amazon-lex", h.clone(),
         json!({"invocationSource": "DialogCodeHook", "sessionId": "s", "sessionState": {"intent": {"name": "X"}, "sessionAttributes": {"CustomerNumber": 4155550142_i64}}}).to_string(),
         StatusCode::BAD_REQUEST, "invalid_type", Some("CustomerNumber")),
    ];
    for (what, path, headers, body, status, code, field) in cases {
        let r = app.send_raw(path, &headers, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.text);
        let e = &r.json()["error"];
        assert_eq!(e["code"], code, "{what}: {}", r.text);
        assert!(e["request_id"].is_string(), "{what}: our error body");
        if let Some(f) = field {
            assert!(
                e["field"].as_str().is_some_and(|x| x.ends_with(f)),
                "{what}: field {}",
                e["field"]
            );
        }
    }
    // Nothing was half-written.
    assert_eq!(app.count_calls().await, 0);
    // Five9 has no bare route.
    let r = app
        .send_raw("/v1/connectors/five9", &form, "call_id=1")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn the_new_platforms_keep_tenants_apart(app: TestApp) {
    let ours = bearer(&app.key);
    app.send_raw(
        "/v1/connectors/nice-cxone/start",
        &ours,
        json!({"contactId": "7001", "ani": "4155550142"}).to_string(),
    )
    .await;
    app.send_raw(
        "/v1/connectors/nice-cxone/end",
        &ours,
        json!({"contactId": "7001", "ani": "4155550142", "customerRef": "ours", "var_secret": "s3"}).to_string(),
    )
    .await;
    let other = app.new_tenant("other").await;
    let theirs = bearer(&other);
    let checks: Vec<(&str, String)> = vec![
        (
            "/v1/connectors/genesys-cloud/start",
            genesys("t-1", json!({})),
        ),
        (
            "/v1/connectors/nice-cxone/start",
            json!({"contactId": "t-2", "ani": "4155550142"}).to_string(),
        ),
        (
            "/v1/connectors/voiceflow/start",
            json!({"user_id": "+14155550142", "call_id": "t-3"}).to_string(),
        ),
    ];
    for (path, body) in checks {
        let r = app.send_raw(path, &theirs, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(r.json()["sticky_band"], "low", "{path}");
        assert_eq!(r.json()["sticky_customer_ref"], "", "{path}");
        assert!(!r.text.contains("s3"), "{path}");
    }
    let five9 = app
        .get_raw(
            &format!("/v1/connectors/five9/start?key={other}&call_id=t-4&ANI=4155550142"),
            &[],
        )
        .await;
    assert_eq!(five9.json()["sticky_band"], "low");
    let lex = app
        .send_raw(
            "/v1/connectors/amazon-lex",
            &theirs,
            lex(
                "DialogCodeHook",
                "t-5",
                json!({"ani": "+14155550142"}),
                "InProgress",
            ),
        )
        .await;
    assert_eq!(
        lex.json()["sessionState"]["sessionAttributes"]["sticky_band"],
        "low"
    );
    // Their call ids are theirs: our call 7001 is not visible to them, theirs not to us.
    assert_eq!(
        app.send("GET", "/v1/calls/7001", Some(&other), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.get("/v1/calls/t-2").await.status, StatusCode::NOT_FOUND);
}

async fn authorization_schemes_are_read_in_any_case_on_every_route(app: TestApp) {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{}", app.key));
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = app
            .get_raw(
                "/v1/api-keys/current",
                &[("authorization", format!("{scheme} {}", app.key))],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "REST with {scheme}: {}", r.text);
    }
    for value in [
        format!("bearer {}", app.key),
        format!("basic {basic}"),
        format!("BASIC {basic}"),
    ] {
        let r = app
            .send_raw(
                "/v1/connectors/nice-cxone/start",
                &[
                    ("authorization", value.clone()),
                    ("content-type", "application/json".into()),
                ],
                json!({"contactId": "auth-1"}).to_string(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "connector with {value:.12}: {}",
            r.text
        );
    }
    let r = app
        .send_raw(
            "/v1/connectors/nice-cxone/start",
            &[
                ("authorization", format!("Token {}", app.key)),
                ("content-type", "application/json".into()),
            ],
            json!({"contactId": "auth-2"}).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "an unknown scheme");
}
