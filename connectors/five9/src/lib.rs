//! Five9 connector.
//!
//! A Five9 **web connector** (VCC Administrator → Configure → Connectors; trigger
//! `OnCallAccepted` for the start, `OnCallDisconnected` or `OnCallDispositioned` for the end)
//! or an IVR script's web-service **Query** module sends the parameters its admin lists, with
//! Five9's `@Call.ANI@` placeholders substituted: as the query string of a GET, or form-encoded
//! in a POST (constants may also travel in the URL; body values win). A value still reading
//! `@Something@` was not substituted and is read as absent, never as data.
//!
//! Keys: `call_id` (`@Call.call_id@`, required), `session_id`, `ANI`, `DNIS`, `call_type`
//! (`@Call.type_name@`: on Outbound, Autodial, Preview, Manual or Agent calls the customer is the
//! called party, DNIS), `attestation` (STIR/SHAKEN `A`/`B`/`C`/`failed`), `campaign_name`,
//! `skill_name`, `crm_id` and `ext_<name>` (external ids);
//! at the end `customer_ref`, `intent`, `intent_status`, `intent_due_at` (a promised
//! callback's due time), `disposition_name` (saved as variable `disposition`), `comments` or
//! `summary` (the call's summary) and `var_<name>` variables.
//! Other keys are ignored.
//!
//! Connectors send no custom headers: the API key travels as HTTP Basic credentials in the URL,
//! or as a `key` parameter where the URL field refuses them (see [`KEY_PARAMETER`]).
//!
//! The answer is a flat JSON object of strings (the `sticky_*` fields), which the IVR module
//! maps to variables; server-side connectors ignore it.

use sticky_core::commands::{EndCall, IdentityHints, StartCall};
use sticky_core::connector::flat::{
    FlatParams, check_flat_string_map, flat_string_map, hints, is_outbound,
};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route, context_fields,
    end_fields,
};
use sticky_core::domain::Platform;
use sticky_core::engine::{EndOutcome, StartOutcome};

/// The slug in our URLs.
pub const SLUG: &str = "five9";
/// The parameter that may carry the API key: Five9 connectors cannot add headers, and some of
/// its URL fields refuse `user:password@` credentials.
pub const KEY_PARAMETER: &str = "key";
/// We keep answers small: IVR variables are short text.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Longest key we produce.
const MAX_KEY_CHARS: usize = 100;

/// The Five9 connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct Five9;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

fn call_hints(p: &FlatParams) -> Result<IdentityHints, Rejection> {
    // Five9's `AGENT` call type is a call an agent dialled by hand.
    let outbound = p
        .text("call_type")?
        .is_some_and(|t| is_outbound(t) || t.eq_ignore_ascii_case("agent"));
    let ani = p.first_text(&["ANI", "ani"])?;
    let dnis = p.first_text(&["DNIS", "dnis"])?;
    let (customer, business) = if outbound { (dnis, ani) } else { (ani, dnis) };
    let mut external = p.prefixed("ext_");
    if let Some(v) = p.text("crm_id")? {
        external.push(("crm_id".into(), v.to_owned()));
    }
    Ok(hints(customer, business, external, |n| match n {
        "crm_id" => "crm_id".to_owned(),
        other => format!("ext_{other}"),
    })?
    .with_attestation(p.attestation("attestation")?))
}

fn start(p: &FlatParams) -> Result<StartCall, Rejection> {
    Ok(StartCall {
        call_id: p.call_id("call_id")?,
        platform: platform(),
        hints: call_hints(p)?,
    })
}

fn end(p: &FlatParams) -> Result<EndCall, Rejection> {
    Ok(EndCall {
        call_id: p.call_id("call_id")?,
        platform: platform(),
        customer_ref: p.customer_ref("customer_ref")?,
        intent: p.intent("intent")?,
        intent_due_at: p.due_at("intent_due_at", "intent")?,
        intent_status: p.intent_status("intent_status")?,
        variables: p.variables(&[("disposition_name", "disposition")])?,
        summary: p.summary(&["comments", "summary"])?,
        hints: call_hints(p)?,
    })
}

/// The parameters: the body's (form, or a JSON object), then the query's, without the key.
fn read(request: &InboundRequest<'_>) -> Result<FlatParams, Rejection> {
    let query = FlatParams::from_pairs(
        request
            .query
            .iter()
            .filter(|(k, _)| k != KEY_PARAMETER)
            .cloned(),
    );
    let body = if request.method == "GET" || request.body.is_empty() {
        FlatParams::default()
    } else {
        match request.content_type().as_str() {
            "application/x-www-form-urlencoded" => {
                let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(request.body)
                    .map_err(|_| Rejection::malformed("the body is not a valid form"))?;
                FlatParams::from_pairs(pairs.into_iter().filter(|(k, _)| k != KEY_PARAMETER))
            }
            "application/json" => FlatParams::from_json(request.body, "a Five9 request")?.0,
            _ => {
                return Err(Rejection::Invalid {
                    status: 415,
                    code: "unsupported_media_type",
                    message: "send Five9 parameters in the query string or as application/x-www-form-urlencoded".into(),
                    field: None,
                });
            }
        }
    };
    let params = body.with_fallback(query);
    if !params.has("call_id") {
        return Err(Rejection::Invalid {
            status: 400,
            code: "missing_field",
            message:
                "`call_id` is required: add the variable call_id = @Call.call_id@ to the connector"
                    .into(),
            field: Some("call_id".into()),
        });
    }
    Ok(params)
}

fn answer(fields: Vec<(String, String)>) -> Rendered {
    Rendered::json(&flat_string_map(fields, MAX_RESPONSE_BYTES, MAX_KEY_CHARS))
}

impl Connector for Five9 {
    fn slug(&self) -> &'static str {
        SLUG
    }

    fn key_parameter(&self) -> Option<&'static str> {
        Some(KEY_PARAMETER)
    }

    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection> {
        let p = read(request)?;
        match route {
            Route::Start => Ok(ConnectorCommand::Start(start(&p)?)),
            Route::End | Route::Auto => Ok(ConnectorCommand::End(end(&p)?)),
        }
    }

    fn render_start(&self, _request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered {
        answer(context_fields(outcome))
    }

    fn render_end(&self, _request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered {
        answer(end_fields(outcome))
    }

    fn check_answer(&self, rendered: &Rendered) -> Result<(), String> {
        check_flat_string_map(rendered, MAX_RESPONSE_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(
        method: &'a str,
        query: &'a [(String, String)],
        body: &'a [u8],
        headers: &'a [(String, String)],
    ) -> InboundRequest<'a> {
        InboundRequest {
            method,
            url: "https://sticky.example.com/v1/connectors/five9/start",
            headers,
            query,
            body,
        }
    }

    #[test]
    fn a_get_reads_the_query_and_never_the_key() {
        let query = vec![
            ("key".to_owned(), "sc_secret".to_owned()),
            ("call_id".to_owned(), "300000000000123".to_owned()),
            ("ANI".to_owned(), "4155550142".to_owned()),
        ];
        let p = read(&request("GET", &query, b"", &[])).unwrap();
        assert!(!p.has("key"));
        assert_eq!(p.text("ANI").unwrap(), Some("4155550142"));
    }

    #[test]
    fn body_values_win_over_url_constants() {
        let query = vec![("call_id".to_owned(), "from-url".to_owned())];
        let headers = vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )];
        let p = read(&request(
            "POST",
            &query,
            b"call_id=from-body&key=k",
            &headers,
        ))
        .unwrap();
        assert_eq!(p.text("call_id").unwrap(), Some("from-body"));
        assert!(!p.has("key"));
    }

    #[test]
    fn an_unsubstituted_ani_is_no_caller() {
        let query = vec![
            ("call_id".to_owned(), "3".to_owned()),
            ("ANI".to_owned(), "@Call.ANI@".to_owned()),
        ];
        let Ok(ConnectorCommand::Start(s)) =
            Five9.parse(Route::Start, &request("GET", &query, b"", &[]))
        else {
            panic!("a start");
        };
        assert_eq!(s.hints.ani, None);
    }

    #[test]
    fn another_media_type_is_refused() {
        let headers = vec![("content-type".to_owned(), "text/plain".to_owned())];
        let err = read(&request("POST", &[], b"call_id=1", &headers)).unwrap_err();
        assert!(matches!(err, Rejection::Invalid { status: 415, .. }));
    }
}
