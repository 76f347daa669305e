//! Caller numbers. Platforms send the caller (ANI) as E.164, national digits, `tel:` or `sip:`
//! URIs, or one of many "withheld" markers; [`Ani::parse`] turns any of them into either a
//! canonical E.164 [`PhoneNumber`] or a reason why the value is not an identity. Parsing is done
//! by the `phonenumber` crate (libphonenumber's metadata); this module only strips URI syntax and
//! recognises withheld markers first.

use std::fmt;
use std::str::FromStr;

use phonenumber::{Mode, country};

/// A phone number in E.164 form (`+14155551234`). The only constructor parses, so holding one
/// means the number is canonical and usable as an identity.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// The E.164 text, with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Phone numbers are personal data: `Debug` never prints the digits, so a stray `{:?}` in a
/// log line cannot leak one.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneNumber(<redacted>)")
    }
}

/// The region used for numbers written without a country code ("4155551234").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRegion(country::Id);

impl Default for DefaultRegion {
    fn default() -> Self {
        Self(country::Id::US)
    }
}

impl DefaultRegion {
    /// The region's country calling code (1 for the North American plan).
    fn calling_code(self) -> Option<u16> {
        phonenumber::metadata::DATABASE
            .by_id(self.0.as_ref())
            .map(phonenumber::Metadata::country_code)
    }
}

impl FromStr for DefaultRegion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .to_ascii_uppercase()
            .parse::<country::Id>()
            .map(Self)
            .map_err(|_| format!("`{s}` is not an ISO 3166-1 alpha-2 region code"))
    }
}

/// Why a caller value is not used as an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithheldReason {
    /// Empty, a withheld word (`anonymous`, `restricted` ...) or a platform's sentinel number.
    Withheld,
    /// A client or application endpoint (`client:alice`), not a telephone line.
    NotATelephone,
    /// Something that does not parse as a phone number at all.
    Unparseable,
}

impl WithheldReason {
    /// A short human explanation, safe for responses (it never repeats the raw value).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Withheld => "caller id withheld or unavailable",
            Self::NotATelephone => "caller is an application endpoint, not a phone line",
            Self::Unparseable => "caller id is not a usable phone number",
        }
    }
}

/// The caller number as the platform gave it, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ani {
    /// A usable number.
    Number(PhoneNumber),
    /// A value was given but it is not an identity.
    Withheld(WithheldReason),
}

/// Words that platforms put in place of a withheld caller id.
const WITHHELD_WORDS: &[&str] = &[
    "anonymous",
    "restricted",
    "private",
    "unknown",
    "unavailable",
    "withheld",
    "blocked",
    "null",
    "none",
];

/// Twilio's sentinel numbers for withheld callers (ANONYMOUS, RESTRICTED, BLOCKED, UNKNOWN,
/// UNAVAILABLE, spelled on a keypad; RESTRICTED and ANONYMOUS also seen with a leading 1),
/// and fillers seen in call-center data.
const SENTINEL_DIGITS: &[&str] = &[
    "266696687",
    "7378742833",
    "2562533",
    "8656696",
    "86282452253",
    "1266696687",
    "17378742833",
    "0000000000",
];

impl Ani {
    /// Interprets a caller value in any common form. Never fails: a value that is not a usable
    /// number is a [`Ani::Withheld`] with its reason.
    pub fn parse(raw: &str, region: DefaultRegion) -> Self {
        let mut value = raw.trim();
        let lower = value.to_ascii_lowercase();
        if lower.starts_with("client:") {
            return Self::Withheld(WithheldReason::NotATelephone);
        }
        for scheme in ["tel:", "sips:", "sip:"] {
            if lower.starts_with(scheme) {
                value = &value[scheme.len()..];
                // A SIP URI's user part is the number; a tel: URI may carry ;parameters.
                value = value.split('@').next().unwrap_or_default();
                value = value.split(';').next().unwrap_or_default();
                break;
            }
        }
        let compact: String = value
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\t'))
            .collect();
        if compact.is_empty()
            || WITHHELD_WORDS
                .iter()
                .any(|w| compact.eq_ignore_ascii_case(w))
        {
            return Self::Withheld(WithheldReason::Withheld);
        }
        // An extension after the number is left out (only a value with more than digits can
        // carry one: the usual number is not searched).
        let compact = if compact.bytes().all(|b| b.is_ascii_digit() || b == b'+') {
            &compact[..]
        } else {
            without_extension(&compact)
        };
        let (plus, digits) = match compact.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, compact),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Self::Withheld(if digits.chars().any(|c| c.is_ascii_alphabetic()) {
                // "anonymous@anonymous.invalid" and friends, or a SIP user name.
                if WITHHELD_WORDS.iter().any(|w| lower.contains(w)) {
                    WithheldReason::Withheld
                } else {
                    WithheldReason::NotATelephone
                }
            } else {
                WithheldReason::Unparseable
            });
        }
        if SENTINEL_DIGITS.contains(&digits) || digits.bytes().all(|b| b == b'0') {
            return Self::Withheld(WithheldReason::Withheld);
        }
        // A number written with `+`: the North American shortcut, else the parser.
        // Without: the default region's parser, which knows that region's international
        // prefix (`011` in North America, `00` in most of Europe, `0011` in Australia, `010`
        // in Japan) and trunk prefix (the `0` of `0113 496 0000` in the UK).
        let parsed = if plus {
            if let Some(number) = nanp_e164(digits) {
                return Self::Number(number);
            }
            phonenumber::parse(None, format!("+{digits}"))
        } else {
            // Eleven digits starting with 1 in a North American region: E.164 but for the
            // `+` (what some platforms send).
            if region.calling_code() == Some(1)
                && let Some(number) = nanp_e164(digits)
            {
                return Self::Number(number);
            }
            national_or_international(digits, region)
        };
        match parsed {
            Ok(number) if number.national().value() > 0 && is_plausible(&number) => {
                Self::Number(PhoneNumber(number.format().mode(Mode::E164).to_string()))
            }
            _ => Self::Withheld(WithheldReason::Unparseable),
        }
    }

    /// The number, when this is a usable identity.
    pub fn number(&self) -> Option<&PhoneNumber> {
        match self {
            Self::Number(n) => Some(n),
            Self::Withheld(_) => None,
        }
    }
}

/// Digits without `+`, read in the default region (its international and trunk prefixes
/// included). When that reading is not a valid number, two other readings are tried before it
/// is kept as it is: the digits as an international number without its `+` (NICE CXone sends
/// `442079460000`), and the digits after a common international prefix (`00`, `011`) that is
/// not the region's own (`0044 20 7946 0000` from a system configured elsewhere).
fn national_or_international(
    digits: &str,
    region: DefaultRegion,
) -> Result<phonenumber::PhoneNumber, phonenumber::ParseError> {
    let national = phonenumber::parse(Some(region.0), digits);
    // A complete North American number (ten digits) stays national even where the metadata
    // does not know its range (fictional 555-01xx numbers, new area codes).
    if national.as_ref().is_ok_and(|n| {
        phonenumber::is_valid(n) || (n.code().value() == 1 && n.national().to_string().len() == 10)
    }) {
        return national;
    }
    let candidates = [
        Some(digits),
        digits.strip_prefix("011"),
        digits.strip_prefix("00"),
    ];
    for rest in candidates.into_iter().flatten() {
        if let Ok(international) = phonenumber::parse(None, format!("+{rest}"))
            && phonenumber::is_valid(&international)
        {
            return Ok(international);
        }
    }
    national
}

/// A North American number written in full (`1` + area code + number, the form Twilio and
/// Amazon Connect send) is already E.164: answered without the parser, which tries each of the
/// plan's ~25 regions' patterns in turn for `+1` and costs more than a start's look-ups. The
/// area code and exchange start with 2-9, so the parser would neither strip nor change a digit
/// (a test checks it agrees on every such shape).
fn nanp_e164(digits: &str) -> Option<PhoneNumber> {
    let b = digits.as_bytes();
    (b.len() == 11
        && b[0] == b'1'
        && (b'2'..=b'9').contains(&b[1])
        && (b'2'..=b'9').contains(&b[4])
        && b.iter().all(u8::is_ascii_digit))
    .then(|| PhoneNumber(format!("+{digits}")))
}

/// A number without the extension written after it (`ext. 1234`, `x1234`, `#1234`, in the
/// compact form: separators already removed): the extension is a line behind the number, and
/// the number is what identifies the caller (as E.164 writes it, without the extension).
fn without_extension(compact: &str) -> &str {
    let lower = compact.to_ascii_lowercase();
    for marker in ["extension", "ext", "x", "#"] {
        let Some(at) = lower.find(marker) else {
            continue;
        };
        let (head, tail) = (&compact[..at], &lower[at + marker.len()..]);
        let digits = head.strip_prefix('+').unwrap_or(head);
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !tail.is_empty()
            && tail.bytes().all(|b| b.is_ascii_digit())
        {
            return head;
        }
    }
    compact
}

/// E.164 allows at most 15 digits; anything shorter than 7 is a short code or an extension,
/// not a caller line. Full validity (`is_valid`) is deliberately not required: it rejects
/// fictional and newly allocated ranges that real platforms do deliver.
fn is_plausible(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national().to_string();
    let total = number.code().value().to_string().len() + national.len();
    (7..=15).contains(&total) && national.len() >= 4
}

impl PhoneNumber {
    /// Parses a number that must be usable (for lookups such as `GET /v1/customers?ani=`).
    ///
    /// # Errors
    /// The reason the value is not a usable number.
    pub fn parse(raw: &str, region: DefaultRegion) -> Result<Self, WithheldReason> {
        match Ani::parse(raw, region) {
            Ani::Number(n) => Ok(n),
            Ani::Withheld(reason) => Err(reason),
        }
    }

    /// Rebuilds a number read back from storage, where only canonical values are written.
    pub(crate) fn from_stored(e164: String) -> Self {
        Self(e164)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(raw: &str) -> Option<String> {
        Ani::parse(raw, DefaultRegion::default())
            .number()
            .map(|n| n.as_str().to_owned())
    }

    /// The North American shortcut gives what the parser gives, for every area code and
    /// exchange shape, and leaves everything else to the parser. The exchanges and lines are
    /// pseudo-random from a seed that is printed (and can be set with `STICKY_TEST_SEED`), so
    /// that a failure can be reproduced.
    #[test]
    fn the_north_american_shortcut_agrees_with_the_parser() {
        use rand::{Rng, SeedableRng};
        let seed: u64 = std::env::var("STICKY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_261_205);
        println!("seed {seed} (STICKY_TEST_SEED={seed} reruns these inputs)");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut checked = 0;
        for area in 200..1000 {
            for _ in 0..4 {
                let exchange: u32 = rng.random_range(200..1000);
                let line: u32 = rng.random_range(0..10_000);
                let digits = format!("1{area}{exchange}{line:04}");
                let short = nanp_e164(&digits).map(|n| n.0);
                let parsed = phonenumber::parse(None, format!("+{digits}"))
                    .ok()
                    .filter(|n| n.national().value() > 0 && is_plausible(n))
                    .map(|n| n.format().mode(Mode::E164).to_string());
                assert_eq!(short, parsed, "+{digits} (seed {seed})");
                checked += 1;
            }
        }
        assert_eq!(checked, 3200);
        for other in [
            "4420794600",
            "11155551234",
            "14151551234",
            "1415555123",
            "33612345678",
        ] {
            assert!(nanp_e164(other).is_none(), "{other}");
        }
    }

    #[test]
    fn common_forms_of_one_number_normalise_to_the_same_e164() {
        let cases = [
            "+14155551234",
            "4155551234",
            "14155551234",
            "(415) 555-1234",
            "415.555.1234",
            "+1 415-555-1234",
            "tel:+1-415-555-1234",
            "sip:+14155551234@pbx.example.net",
            "sip:+14155551234@pbx.example.net;user=phone",
            "sips:4155551234@10.0.0.1:5061",
            "0014155551234",
            "01114155551234",
        ];
        for raw in cases {
            assert_eq!(e164(raw).as_deref(), Some("+14155551234"), "input {raw:?}");
        }
    }

    /// An extension after the number is left out: the number is the caller's line.
    #[test]
    fn an_extension_after_the_number_is_left_out() {
        for raw in [
            "+1 (415) 555-1234 ext. 1234",
            "415-555-1234 x12",
            "+14155551234#9",
            "+1 415 555 1234 extension 77",
            "tel:+1-415-555-1234;ext=55",
        ] {
            assert_eq!(e164(raw).as_deref(), Some("+14155551234"), "input {raw:?}");
        }
        // Not a number followed by an extension.
        for raw in ["ext 1234", "x1234", "+14155551234 ext", "+1415x555x1234"] {
            assert_eq!(e164(raw), None, "input {raw:?}");
        }
    }

    #[test]
    fn international_numbers_keep_their_country_code() {
        assert_eq!(e164("+442071838750").as_deref(), Some("+442071838750"));
        assert_eq!(e164("+33 1 42 68 53 00").as_deref(), Some("+33142685300"));
    }

    #[test]
    fn international_numbers_without_a_plus_keep_their_country_code() {
        let us = DefaultRegion::default();
        for (raw, e164) in [
            ("442079460000", "+442079460000"),
            ("33142685300", "+33142685300"),
            ("4155550142", "+14155550142"),
            ("14155550142", "+14155550142"),
            ("2125550142", "+12125550142"),
            ("3055550100", "+13055550100"),
        ] {
            assert_eq!(
                Ani::parse(raw, us).number().map(PhoneNumber::as_str),
                Some(e164),
                "{raw}"
            );
        }
    }

    /// Each region's own national form (trunk prefix), its international prefix, and the
    /// `+` form, with and without spaces, read to the same E.164 number.
    #[test]
    fn every_region_reads_its_national_and_international_forms() {
        let table: &[(&str, &[&str], &str)] = &[
            (
                "GB",
                &[
                    "0113 496 0000",
                    "01134960000",
                    "+44 113 496 0000",
                    "00 44 113 496 0000",
                    "441134960000",
                ],
                "+441134960000",
            ),
            (
                "GB",
                &["00 1 415 555 0142", "+1 415 555 0142"],
                "+14155550142",
            ),
            (
                "DE",
                &["030 901820", "030901820", "0049 30 901820", "+49 30 901820"],
                "+4930901820",
            ),
            (
                "FR",
                &[
                    "01 42 68 53 00",
                    "0142685300",
                    "0033 1 42 68 53 00",
                    "+33142685300",
                ],
                "+33142685300",
            ),
            (
                "AU",
                &[
                    "02 9374 4000",
                    "0293744000",
                    "0011 61 2 9374 4000",
                    "+61 2 9374 4000",
                ],
                "+61293744000",
            ),
            (
                "AU",
                &["0011 44 20 7946 0000", "001144 2079460000"],
                "+442079460000",
            ),
            (
                "IN",
                &[
                    "098765 43210",
                    "9876543210",
                    "00 91 98765 43210",
                    "+91 98765 43210",
                ],
                "+919876543210",
            ),
            (
                "BR",
                &[
                    "(11) 91234-5678",
                    "11912345678",
                    "0021 55 11 91234 5678",
                    "+55 11 91234-5678",
                ],
                "+5511912345678",
            ),
            (
                "JP",
                &[
                    "03-1234-5678",
                    "0312345678",
                    "010 81 3 1234 5678",
                    "+81 3-1234-5678",
                ],
                "+81312345678",
            ),
            (
                "MX",
                &[
                    "55 1234 5678",
                    "5512345678",
                    "00 52 55 1234 5678",
                    "+52 55 1234 5678",
                ],
                "+525512345678",
            ),
            (
                "US",
                &[
                    "(415) 555-0142",
                    "415.555.0142",
                    "1 415 555 0142",
                    "14155550142",
                    "011 1 415 555 0142",
                    "+1 415 555 0142",
                ],
                "+14155550142",
            ),
            (
                "US",
                &[
                    "011 44 20 7946 0000",
                    "0044 20 7946 0000",
                    "442079460000",
                    "+44 20 7946 0000",
                ],
                "+442079460000",
            ),
            (
                "CA",
                &["(416) 555-0199", "1 416 555 0199", "+14165550199"],
                "+14165550199",
            ),
        ];
        for (region, forms, e164) in table {
            let r: DefaultRegion = region.parse().unwrap();
            for raw in *forms {
                assert_eq!(
                    Ani::parse(raw, r).number().map(PhoneNumber::as_str),
                    Some(*e164),
                    "{raw:?} in {region}"
                );
            }
        }
    }

    #[test]
    fn a_configured_default_region_reads_national_numbers() {
        let gb: DefaultRegion = "gb".parse().unwrap();
        let ani = Ani::parse("020 7183 8750", gb);
        assert_eq!(ani.number().unwrap().as_str(), "+442071838750");
    }

    #[test]
    fn an_unknown_region_code_is_rejected() {
        assert!("XX".parse::<DefaultRegion>().is_err());
    }

    #[test]
    fn a_withheld_number_is_not_an_identity() {
        let cases = [
            "",
            "   ",
            "anonymous",
            "Anonymous",
            "RESTRICTED",
            "private",
            "unknown",
            "unavailable",
            "withheld",
            "blocked",
            "+266696687",
            "+7378742833",
            "+2562533",
            "+8656696",
            "+86282452253",
            "266696687",
            "1266696687",
            "+17378742833",
            "0000000000",
            "sip:anonymous@anonymous.invalid",
            "tel:anonymous",
        ];
        for raw in cases {
            assert_eq!(
                Ani::parse(raw, DefaultRegion::default()),
                Ani::Withheld(WithheldReason::Withheld),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn application_endpoints_are_not_phone_lines() {
        for raw in ["client:alice", "sip:alice@example.com"] {
            assert_eq!(
                Ani::parse(raw, DefaultRegion::default()),
                Ani::Withheld(WithheldReason::NotATelephone),
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn garbage_is_unparseable_not_an_identity() {
        for raw in ["12", "+1", "++--", "#123*", "+1234567890123456789"] {
            assert_eq!(
                Ani::parse(raw, DefaultRegion::default()).number(),
                None,
                "input {raw:?}"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_digits() {
        let n = PhoneNumber::parse("+14155551234", DefaultRegion::default()).unwrap();
        assert!(!format!("{n:?}").contains("555"));
    }
}
