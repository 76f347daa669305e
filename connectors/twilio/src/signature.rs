//! `X-Twilio-Signature`, verified exactly as Twilio's own validators do
//! (<https://www.twilio.com/docs/usage/security#validating-requests>): HMAC-SHA1 with the
//! account's auth token over the full URL followed by every form parameter, sorted by name
//! (repeated names: each distinct value, sorted), as `name` + `value`; base64. JSON bodies are signed
//! over the URL alone, whose `bodySHA256` query parameter carries the hex SHA-256 of the body.
//! Like Twilio's libraries we accept the URL as given, without its port, and with the
//! scheme's default port; and with the Basic-auth credentials Twilio saw in the configured URL.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The base64 HMAC-SHA1 Twilio would send for `url` and `params`.
pub fn compute(token: &str, url: &str, params: &[(String, String)]) -> String {
    // Twilio's libraries sign each distinct value of a repeated name once, in order.
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    B64.encode(mac.finalize().into_bytes())
}

/// Hex SHA-256 of a body, as in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `scheme://[creds@]host[:port]/rest` split into its parts.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    Some((scheme, authority, tail))
}

/// The URL variants Twilio's validators accept, optionally with Basic-auth credentials.
pub fn url_variants(url: &str, credentials: Option<(&str, &str)>) -> Vec<String> {
    let Some((scheme, authority, tail)) = split(url) else {
        return vec![url.to_owned()];
    };
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let bare_host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let hosts = [
        host.to_owned(),
        bare_host.to_owned(),
        format!("{bare_host}:{default_port}"),
    ];
    let mut out = Vec::new();
    for h in &hosts {
        for creds in [None, credentials] {
            let authority = match creds {
                Some((user, "")) => format!("{user}@{h}"),
                Some((user, pass)) => format!("{user}:{pass}@{h}"),
                None => h.clone(),
            };
            let candidate = format!("{scheme}://{authority}{tail}");
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out
}

/// Whether `signature` is valid for any accepted variant of the URL.
pub fn is_valid(
    token: &str,
    url: &str,
    credentials: Option<(&str, &str)>,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    url_variants(url, credentials).iter().any(|u| {
        compute(token, u, params)
            .as_bytes()
            .ct_eq(signature.as_bytes())
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from Twilio's own validator tests (twilio-php RequestValidatorTest, the same
    // vectors as twilio-python and twilio-csharp).
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[test]
    fn twilios_documented_form_vector_verifies() {
        assert_eq!(
            compute("12345", URL, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(is_valid(
            "12345",
            URL,
            None,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!is_valid("12345", URL, None, &params(), "FAIL"));
        assert!(!is_valid(
            "54321",
            URL,
            None,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn repeated_parameters_are_signed_once_per_distinct_value_in_order() {
        let p: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert!(is_valid(
            "12345",
            URL,
            None,
            &p,
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        ));
    }

    #[test]
    fn a_json_body_is_signed_through_its_hash_in_the_url() {
        let body = br#"{"property": "value", "boolean": true}"#;
        let hash = body_sha256(body);
        assert_eq!(
            hash,
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = format!("{URL}&bodySHA256={hash}");
        assert!(is_valid(
            "12345",
            &url,
            None,
            &[],
            "a9nBmqA0ju/hNViExpshrM61xv4="
        ));
    }

    #[test]
    fn ports_are_tried_removed_and_added() {
        let with_port = URL.replace(".com", ".com:1234");
        assert!(is_valid(
            "12345",
            &with_port,
            None,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let http_with_port = with_port.replace("https", "http");
        assert!(is_valid(
            "12345",
            &http_with_port,
            None,
            &params(),
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        assert!(is_valid(
            "12345",
            URL,
            None,
            &params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        let http = URL.replace("https", "http");
        assert!(is_valid(
            "12345",
            &http,
            None,
            &params(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn basic_auth_credentials_in_the_configured_url_are_signed_too() {
        assert!(is_valid(
            "12345",
            URL,
            Some(("user", "pass")),
            &params(),
            "CukzLTc1tT5dXEDIHm/tKBanW10="
        ));
        assert!(is_valid(
            "12345",
            URL,
            Some(("user", "pass")),
            &params(),
            "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="
        ));
        assert!(is_valid(
            "12345",
            URL,
            Some(("user", "")),
            &params(),
            "2YRLlVAflCqxaNicjMpJcSTgzSs="
        ));
    }
}
