//! The plugin point for platforms: a [`Connector`] turns a platform's native webhook request
//! into a [`StartCall`] or an [`EndCall`] (or a typed [`Rejection`]) and renders the engine's
//! answer in the platform's native format.
//!
//! Connectors do no IO and never see the database or the HTTP framework: the server reads the
//! request into an [`InboundRequest`], authenticates the tenant, asks the connector to verify
//! the platform's own signature (with the tenant's [`PlatformSecret`] if it has one), parses,
//! lets the engine act, and asks the connector to render. Everything here is synchronous.

pub mod flat;

use std::fmt;

use crate::commands::{EndCall, StartCall};
use crate::engine::{EndOutcome, StartOutcome};

/// Which of a connector's URLs was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/connectors/{platform}/start`
    Start,
    /// `/v1/connectors/{platform}/end`
    End,
    /// `/v1/connectors/{platform}`: the event is inferred from the payload.
    Auto,
}

/// A platform's request as received.
#[derive(Debug, Clone)]
pub struct InboundRequest<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// The full URL the platform called (scheme, host, path and query), as the platform saw
    /// it: signatures are computed over it.
    pub url: &'a str,
    /// Headers, names in lower case.
    pub headers: &'a [(String, String)],
    /// Decoded query parameters, in order.
    pub query: &'a [(String, String)],
    /// The raw body.
    pub body: &'a [u8],
}

impl InboundRequest<'_> {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lower case, without parameters.
    pub fn content_type(&self) -> String {
        self.header("content-type")
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }
}

/// What the platform asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorCommand {
    /// A call starts.
    Start(StartCall),
    /// A call ends.
    End(EndCall),
    /// An event we acknowledge and do nothing with (a non-final status callback).
    Ignore {
        /// Why, for the response and the logs (no personal data).
        reason: &'static str,
    },
}

/// Why a request is refused. `code` is a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The payload is not what the platform sends (400) or a value is unacceptable (422).
    Invalid {
        /// 400 for shape errors, 422 for unacceptable values.
        status: u16,
        /// Stable code (`malformed_payload`, `missing_field`, `invalid_value` ...).
        code: &'static str,
        /// Human message; never repeats a value.
        message: String,
        /// The offending field, in the platform's naming.
        field: Option<String>,
    },
    /// The platform's signature is missing or wrong (403).
    BadSignature {
        /// Human message.
        message: String,
    },
}

impl Rejection {
    /// 400 `malformed_payload`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::Invalid {
            status: 400,
            code: "malformed_payload",
            message: message.into(),
            field: None,
        }
    }

    /// 400 `missing_field` on `field`.
    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        Self::Invalid {
            status: 400,
            code: "missing_field",
            message: format!("`{field}` is required"),
            field: Some(field),
        }
    }

    /// 400 `invalid_payload`: well-formed but not the payload `what` describes.
    pub fn invalid_payload(message: impl Into<String>) -> Self {
        Self::Invalid {
            status: 400,
            code: "invalid_payload",
            message: message.into(),
            field: None,
        }
    }

    /// The rejection for a JSON body serde could not read as `what`: `malformed_payload` when
    /// it is not JSON, `invalid_payload` (with serde's explanation) when it is other JSON.
    pub fn from_json(err: &serde_json::Error, what: &str) -> Self {
        if err.is_data() {
            Self::invalid_payload(format!("not {what}: {}", without_values(&err.to_string())))
        } else {
            Self::malformed("the body is not valid JSON")
        }
    }

    /// 422 `invalid_value` on `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            status: 422,
            code: "invalid_value",
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

impl From<crate::error::FieldError> for Rejection {
    fn from(e: crate::error::FieldError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid { code, message, .. } => write!(f, "{code}: {message}"),
            Self::BadSignature { message } => write!(f, "bad_signature: {message}"),
        }
    }
}

/// serde's message without the submitted value it quotes (it may be a phone number or a
/// name): ``invalid type: integer `14155551234`, expected a string at line 1 column 9`` becomes
/// `invalid type, expected a string at line 1 column 9`.
pub fn without_values(message: &str) -> String {
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if let Some(rest) = message.strip_prefix(kind)
            && let Some(at) = rest.find(", expected")
        {
            return format!("{kind}{}", &rest[at..]);
        }
    }
    message.to_owned()
}

/// An answer in the platform's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Rendered {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// 200 with an XML body.
    pub fn xml(text: String) -> Self {
        Self {
            status: 200,
            content_type: "text/xml; charset=utf-8",
            body: text.into_bytes(),
        }
    }
}

/// A secret a tenant stored for a platform (a Twilio auth token), decrypted for one request.
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformSecret(pub String);

impl fmt::Debug for PlatformSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlatformSecret(<redacted>)")
    }
}

/// One platform.
pub trait Connector: Send + Sync {
    /// The URL slug (`twilio`, `amazon-connect`, `dialogflow-cx`).
    fn slug(&self) -> &'static str;

    /// Whether the platform calls one URL for several events (`/v1/connectors/{slug}`).
    fn supports_auto_route(&self) -> bool {
        false
    }

    /// A query or form parameter that may carry the API key, for platforms that can send
    /// neither headers nor `user:password@` credentials (Five9 connectors). The server reads
    /// it only when no credentials header is present, and never logs it. Default: none.
    fn key_parameter(&self) -> Option<&'static str> {
        None
    }

    /// Validates a settings document sent to `PUT /v1/connectors/{slug}/settings` and returns
    /// the secret to store encrypted. The default: the platform has no settings.
    ///
    /// # Errors
    /// A [`Rejection`] naming the bad field; `settings_not_supported` by default.
    fn parse_settings(&self, settings: &serde_json::Value) -> Result<PlatformSecret, Rejection> {
        let _ = settings;
        Err(Rejection::Invalid {
            status: 404,
            code: "settings_not_supported",
            message: format!("the {} connector has no settings", self.slug()),
            field: None,
        })
    }

    /// Verifies the platform's own signature. `secret` is the tenant's stored secret, if any;
    /// without one, connectors that sign accept the request (the API key authenticates it).
    ///
    /// # Errors
    /// [`Rejection::BadSignature`].
    fn verify(
        &self,
        request: &InboundRequest<'_>,
        secret: Option<&PlatformSecret>,
    ) -> Result<(), Rejection> {
        let _ = (request, secret);
        Ok(())
    }

    /// Translates the request into a command.
    ///
    /// # Errors
    /// A [`Rejection`] for anything that is not a payload this platform sends.
    fn parse(
        &self,
        route: Route,
        request: &InboundRequest<'_>,
    ) -> Result<ConnectorCommand, Rejection>;

    /// Renders the answer to a start.
    fn render_start(&self, request: &InboundRequest<'_>, outcome: &StartOutcome) -> Rendered;

    /// Renders the answer to an end.
    fn render_end(&self, request: &InboundRequest<'_>, outcome: &EndOutcome) -> Rendered;

    /// Renders the answer to an ignored event.
    fn render_ignored(&self, request: &InboundRequest<'_>, reason: &'static str) -> Rendered {
        let _ = request;
        Rendered::json(&serde_json::json!({ "ignored": reason }))
    }

    /// Checks that a rendered answer obeys the platform's limits (used by the conformance
    /// tests every connector runs).
    ///
    /// # Errors
    /// What is wrong.
    fn check_answer(&self, rendered: &Rendered) -> Result<(), String>;
}

/// The caller's context as flat `sticky_*` text fields, in a fixed order (most important
/// first, variables last), for platforms that take only strings: `sticky_call_id`,
/// `sticky_customer_ref` (empty when unknown), `sticky_band`, `sticky_confidence`,
/// `sticky_action`, then with a context `sticky_open_intents` (comma-separated),
/// `sticky_call_count`, `sticky_last_summary`, and `sticky_var_<name>` for each scalar
/// variable. Connectors drop trailing fields to fit their platform's size limit.
pub fn context_fields(outcome: &StartOutcome) -> Vec<(String, String)> {
    let mut fields = vec![
        ("sticky_call_id".to_owned(), outcome.call_id.clone()),
        (
            "sticky_customer_ref".to_owned(),
            outcome.customer_ref.clone().unwrap_or_default(),
        ),
        ("sticky_band".to_owned(), outcome.band.as_str().to_owned()),
        (
            "sticky_confidence".to_owned(),
            outcome.confidence.to_string(),
        ),
        ("sticky_action".to_owned(), outcome.band.action().to_owned()),
    ];
    if let Some(ctx) = &outcome.context {
        let intents: Vec<&str> = ctx.open_intents.iter().map(|i| i.intent.as_str()).collect();
        fields.push(("sticky_open_intents".into(), intents.join(",")));
        fields.push(("sticky_call_count".into(), ctx.call_count.to_string()));
        if let Some(summary) = ctx.recent_calls.first().and_then(|c| c.summary.clone()) {
            fields.push(("sticky_last_summary".into(), summary));
        }
        for (name, value) in &ctx.variables {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            fields.push((format!("sticky_var_{name}"), text));
        }
    }
    fields
}

/// The answer to an end as flat text fields: `sticky_call_id`, `sticky_customer_ref` (empty
/// when the call carried no identity) and `sticky_provisional` (`true` or `false`).
pub fn end_fields(outcome: &EndOutcome) -> Vec<(String, String)> {
    vec![
        ("sticky_call_id".into(), outcome.call_id.clone()),
        (
            "sticky_customer_ref".into(),
            outcome.customer_ref.clone().unwrap_or_default(),
        ),
        ("sticky_provisional".into(), outcome.provisional.to_string()),
    ]
}
