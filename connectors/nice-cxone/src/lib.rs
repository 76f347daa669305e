//! NICE CXone connector.
//!
//! CXone has no webhook of its own: a Studio script sends what it builds, with the **REST API**
//! action or a **SNIPPET** using `GetRESTProxy()` / `MakeRestRequest`
//! (<https://help.nice-incontact.com/content/studio/actions/snippet/apicallsfromsnippetaction.htm>),
//! posting a `DYNAMIC` object serialised with `.asjson()`: to `/start` after `BEGIN`, and to
//! `/end` from the `ONRELEASE` event
//! (<https://help.nice-incontact.com/content/studio/actions/onrelease/onrelease.htm>). The bare
//! route reads `"event": "start" | "end"`.
//!
//! Request keys, named after Studio's variables, all text (the digit-only ones — `contactId`,
//! `masterContactId`, `ani`, `dnis` — may also arrive as JSON integers, since `.asjson()` types
//! a member by its value): `contactId` (`ContactID`),
//! `masterContactId` (joins the legs of a transfer: when set, it is the call id, so a
//! transferred leg continues the call), `ani` (`ANI`, often 10 national digits, sometimes
//! international without `+`), `dnis`, `direction` (on `outbound` the customer is the called
//! party), `attestation` (STIR/SHAKEN `A`/`B`/`C`/`failed`), `skillNo`, `skillName`, `busNo`,
//! `ext_<name>` external ids; at the end `customerRef`, `intent`, `intentStatus`,
//! `intentDueAt` (a promised callback's due time), `summary`, `causeCode` and `skillName`
//! (saved as variables `cause_code` and `skill_name`) and `var_<name>` variables. Other keys
//! are ignored.
//!
//! The answer is a flat JSON object of strings (the `sticky_*` context fields), within the
//! REST action's 32 KB response limit: trailing variables are dropped to fit.

use sticky_core::commands::{EndCall, IdentityHints, StartCall};
use sticky_core::connector::flat::{
    FlatParams, check_flat_string_map, flat_string_map, hints, is_outbound,
};
use sticky_core::connector::{
    Connector, ConnectorCommand, InboundRequest, Rejection, Rendered, Route, context_fields,
    end_fields,
};
use sticky_core::domain::{CallId, Platform};
use sticky_core::engine::{EndOutcome, StartOutcome};

/// The slug in our URLs.
pub const SLUG: &str = "nice-cxone";
/// The REST API action and the REST proxy refuse responses over 32 KB.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024;
/// Longest key we produce.
const MAX_KEY_CHARS: usize = 100;

/// The NICE CXone connector.
#[derive(Debug, Default, Clone, Copy)]
pub struct NiceCxone;

fn platform() -> Platform {
    Platform::parse(SLUG).expect("a valid slug")
}

/// The call id: the master contact when the script passes one (all legs of a transfer share
/// it), else the contact.
fn call_id(p: &FlatParams) -> Result<CallId, Rejection> {
    let (key, raw) = match p.digits("masterContactId")? {
        Some(master) => ("masterContactId", master),
        None => (
            "contactId",
            p.digits("contactId")?
                .ok_or_else(|| Rejection::missing("contactId"))?,
        ),
    };
    CallId::parse(&raw).map_err(|e| Rejection::invalid(key, e.0))
}

fn call_hints(p: &FlatParams) -> Result<IdentityHints, Rejection> {
    let outbound = p.text("direction")?.is_some_and(is_outbound);
    let ani = p.digits("ani")?.map(|v| ("ani", v));
    let dnis = p.digits("dnis")?.map(|v| ("dnis", v));
    let (customer, business) = if outbound { (dnis, ani) } else { (ani, dnis) };
    Ok(hints(customer, business, p.prefixed("ext_"), |n| {
        format!("ext_{n}")
    })?
    .with_attestation(p.attestation("attestation")?))
}

fn start(p: &FlatParams) -> Result<StartCall, Rejection> {
    // A contact id is required even when the master contact names the call.
    p.digits("contactId")?
        .ok_or_else(|| Rejection::missing("contactId"))?;
    Ok(StartCall {
        call_id: call_id(p)?,
        platform: platform(),
        hints: call_hints(p)?,
    })
}

fn end(p: &FlatParams) -> Result<EndCall, Rejection> {
    p.digits("contactId")?
        .ok_or_else(|| Rejection::missing("contactId"))?;
    Ok(EndCall {
        call_id: call_id(p)?,
        platform: platform(),
        customer_ref: p.customer_ref("customerRef")?,
        intent: p.intent("intent")?,
        intent_due_at: p.due_at("intentDueAt", "intent")?,
        intent_status: p.intent_status("intentStatus")?,
        variables: p.variables(&[("causeCode", "cause_code"), ("skillName", "skill_name")])?,
        summary: p.summary(&["summary"])?,
        hints: call_hints(p)?,
    })
}

fn read(body: &[u8]) -> Result<FlatParams, Rejection> {
    let (params, _) = FlatParams::from_json(body, "a CXone Studio request")?;
    if !params.has("contactId") {
        return Err(Rejection::Invalid {
            status: 400,
            code: "missing_field",
            message: "`contactId` is required: set it from ContactID in the Studio script".into(),
            field: Some("contactId".into()),
        });
    }
    Ok(params)
}

fn answer(fields: Vec<(String, String)>) -> Rendered {
    Rendered::json(&flat_string_map(fields, MAX_RESPONSE_BYTES, MAX_KEY_CHARS))
}

impl Connector for NiceCxone {
    fn slug(&self) -> &'static str {
        SLUG
    }

    fn supports_auto_route(&self) -> bool {
        true
    }

    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection> {
        let p = read(request.body)?;
        match route {
            Route::Start => Ok(ConnectorCommand::Start(start(&p)?)),
            Route::End => Ok(ConnectorCommand::End(end(&p)?)),
            Route::Auto if p.is_end_event()? => Ok(ConnectorCommand::End(end(&p)?)),
            Route::Auto => Ok(ConnectorCommand::Start(start(&p)?)),
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
