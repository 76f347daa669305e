//! Identity resolution: who is probably calling, how sure we are, and why.
//!
//! Pure functions over [`Evidence`] (what the identity index knows about the hints of a call);
//! no IO, so every rule is a table test below.
//!
//! The model is log-odds summing in the style of Fellegi–Sunter (as Splink does it): each
//! candidate customer starts at a prior of [`PRIOR_LOG_ODDS`] (about 5%: a random caller is
//! rarely a known one), every signal adds its weight (its `contribution`, in natural log-odds),
//! and `confidence = sigmoid(prior + Σ contributions)`. Ambiguity caps the result below the
//! high band, whatever the sum: a shared number or conflicting ids always mean "verify".

use chrono::{DateTime, Utc};

use crate::domain::Attestation;

/// Log-odds every candidate starts from: sigmoid(-3) ≈ 0.047.
pub const PRIOR_LOG_ODDS: f64 = -3.0;
/// Weight of the caller number being linked to the customer by one ended call.
const ANI_MATCH_BASE: f64 = 4.0;
/// Extra weight per repeated call on that number (× ln calls), capped.
const ANI_REPEAT_SLOPE: f64 = 0.5;
const ANI_REPEAT_CAP: f64 = 1.0;
/// Recency runs from +1.0 (a call just now) to -0.5 (long ago), halving every 30 days.
const RECENCY_MAX: f64 = 1.5;
const RECENCY_FLOOR: f64 = -0.5;
const RECENCY_HALF_LIFE_DAYS: f64 = 30.0;
/// Weight of a matching external id (a CRM id is close to deterministic).
const EXTERNAL_MATCH: f64 = 6.0;
/// Each further matching external id adds this.
const EXTERNAL_EXTRA: f64 = 1.0;
/// Penalty for the customer an external id names when the number points elsewhere.
const CONFLICT_EXTERNAL_SIDE: f64 = -2.0;
/// Penalty for the number's customer when an external id names someone else.
const CONFLICT_ANI_SIDE: f64 = -3.0;
/// Share of the number's weight kept under each STIR/SHAKEN verdict (ATIS-1000074): `A`
/// (the carrier vouches for the caller's right to the number) and no verdict keep it all;
/// `B` (the carrier knows the caller, not their right to the number) three quarters; `C`
/// (the carrier only saw where the call entered) half. One recent call from a `B` or `C`
/// number is then medium, "verify", instead of high; a `failed` number is no evidence.
const ATTESTATION_B_SHARE: f64 = 0.75;
const ATTESTATION_C_SHARE: f64 = 0.5;
/// Ambiguous results never reach the high band.
const AMBIGUOUS_CAP: f64 = 0.79;

/// Thresholds of the bands.
pub const HIGH_THRESHOLD: f64 = 0.8;
/// At or above this and below [`HIGH_THRESHOLD`]: medium.
pub const MEDIUM_THRESHOLD: f64 = 0.5;

/// What the identity index holds about one hint: the customers it is linked to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdentityLink {
    /// Storage key of the customer.
    pub customer: i64,
    /// Ended calls that linked the hint to the customer.
    pub call_count: u32,
    /// When the hint was last seen on one of the customer's calls.
    pub last_seen_at: DateTime<Utc>,
}

/// What was known about the caller number.
#[derive(Debug, Clone, PartialEq)]
pub enum AniEvidence {
    /// The call carried no caller number.
    NotGiven,
    /// A value that is not an identity (see [`crate::domain::WithheldReason`]).
    Withheld(&'static str),
    /// A usable number and the customers it is linked to (none when unknown).
    Number(Vec<IdentityLink>),
}

/// One external id from the call and the customers it is linked to.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalEvidence {
    /// Kind of id (`crm_id`); never the value.
    pub name: String,
    /// Customers holding this id.
    pub links: Vec<IdentityLink>,
}

/// Everything the scorer looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Caller number.
    pub ani: AniEvidence,
    /// External ids given with the call.
    pub external: Vec<ExternalEvidence>,
    /// The carrier's STIR/SHAKEN verdict on the caller number, when given.
    pub attestation: Option<Attestation>,
}

/// The signal vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// The caller number is linked to the customer.
    AniMatch,
    /// An external id is linked to the customer.
    ExternalIdMatch,
    /// How long ago the number was last seen with the customer.
    Recency,
    /// The number is linked to several customers.
    SharedAni,
    /// The hints point at different customers.
    Conflict,
    /// The caller number was withheld or unusable.
    WithheldAni,
    /// The carrier's STIR/SHAKEN verdict lowered (or voided) the number's weight.
    Attestation,
}

impl SignalKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AniMatch => "ani_match",
            Self::ExternalIdMatch => "external_id_match",
            Self::Recency => "recency",
            Self::SharedAni => "shared_ani",
            Self::Conflict => "conflict",
            Self::WithheldAni => "withheld_ani",
            Self::Attestation => "attestation",
        }
    }

    /// Parses the wire name (for signals read back from storage).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::AniMatch,
            Self::ExternalIdMatch,
            Self::Recency,
            Self::SharedAni,
            Self::Conflict,
            Self::WithheldAni,
            Self::Attestation,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }
}

/// One reason behind a score.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// Which signal.
    pub kind: SignalKind,
    /// Its weight in log-odds (rounded to 3 decimals).
    pub contribution: f64,
    /// A human explanation; never contains a phone number or an id value.
    pub detail: String,
}

/// How sure we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band {
    /// confidence ≥ 0.8
    High,
    /// 0.5 ≤ confidence < 0.8
    Medium,
    /// confidence < 0.5
    Low,
}

impl Band {
    /// The band of a confidence.
    pub fn of(confidence: f64) -> Self {
        if confidence >= HIGH_THRESHOLD {
            Self::High
        } else if confidence >= MEDIUM_THRESHOLD {
            Self::Medium
        } else {
            Self::Low
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
        }
    }

    /// What the agent should do.
    pub fn action(self) -> &'static str {
        match self {
            Self::High => "greet",
            Self::Medium => "verify",
            Self::Low => "treat_as_new",
        }
    }
}

/// A scored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Storage key of the customer.
    pub customer: i64,
    /// sigmoid(prior + Σ contributions), capped when ambiguous; 4 decimals.
    pub confidence: f64,
    /// The reasons.
    pub signals: Vec<Signal>,
    /// When one of the call's identities was last seen with this customer.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The customer's weight of history behind this match: ended calls on the number, plus
    /// one per matching external id.
    pub calls: u64,
    log_odds: f64,
}

/// The outcome of a lookup: normal even when nobody is found.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The most likely customer, whatever its confidence.
    pub best: Option<Scored>,
    /// Confidence in `best` (the prior when there is none).
    pub confidence: f64,
    /// Band of `confidence`.
    pub band: Band,
    /// Signals of `best`, plus call-level ones (`withheld_ani`).
    pub signals: Vec<Signal>,
    /// Other plausible customers, most likely first (at most 5).
    pub candidates: Vec<Scored>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// "3 days ago", "just now": coarse on purpose, it is read by people.
pub fn describe_age(age: chrono::Duration) -> String {
    let minutes = age.num_minutes();
    if minutes < 1 {
        "just now".into()
    } else if minutes < 60 {
        plural(minutes, "minute")
    } else if minutes < 48 * 60 {
        plural(age.num_hours(), "hour")
    } else {
        plural(age.num_days(), "day")
    }
}

fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Recency weight for a last sighting `age_days` ago: decreasing in age.
fn recency_weight(age_days: f64) -> f64 {
    let age = age_days.max(0.0);
    RECENCY_MAX * 0.5f64.powf(age / RECENCY_HALF_LIFE_DAYS) + RECENCY_FLOOR
}

fn signal(kind: SignalKind, contribution: f64, detail: String) -> Signal {
    Signal {
        kind,
        contribution: round(contribution, 3),
        detail,
    }
}

/// Scores every customer the evidence mentions and picks the most likely one.
pub fn resolve(evidence: &Evidence, now: DateTime<Utc>) -> Resolution {
    // A number whose verification failed is probably spoofed: it names nobody.
    let spoofed = evidence.attestation == Some(Attestation::Failed);
    let ani_links: &[IdentityLink] = match &evidence.ani {
        AniEvidence::Number(links) if !spoofed => links,
        _ => &[],
    };
    let external_customers: Vec<i64> = evidence
        .external
        .iter()
        .flat_map(|e| e.links.iter().map(|l| l.customer))
        .collect();

    let mut customers: Vec<i64> = ani_links
        .iter()
        .map(|l| l.customer)
        .chain(external_customers.iter().copied())
        .collect();
    customers.sort_unstable();
    customers.dedup();

    let mut scored: Vec<Scored> = customers
        .iter()
        .map(|&customer| score_customer(customer, evidence, ani_links, &external_customers, now))
        .collect();
    // Most likely first. Among equals — the same confidence as the caller sees it, as on a
    // line several customers share — the most recently seen ranks first (the household member
    // who called last is the likelier one to call again), then the one with most calls, then
    // the older record, so the same data always gives the same answer.
    scored.sort_by(|a, b| {
        b.confidence
            .total_cmp(&a.confidence)
            .then(b.last_seen_at.cmp(&a.last_seen_at))
            .then(b.calls.cmp(&a.calls))
            .then(b.log_odds.total_cmp(&a.log_odds))
            .then(a.customer.cmp(&b.customer))
    });

    let mut call_signals = Vec::new();
    match &evidence.ani {
        AniEvidence::Number(_) if spoofed => call_signals.push(signal(
            SignalKind::Attestation,
            0.0,
            "caller id failed STIR/SHAKEN verification: the number is not used".into(),
        )),
        AniEvidence::Withheld(reason) => {
            call_signals.push(signal(SignalKind::WithheldAni, 0.0, (*reason).to_owned()));
        }
        AniEvidence::Number(links) if links.is_empty() => call_signals.push(signal(
            SignalKind::AniMatch,
            0.0,
            "number not linked to any customer".into(),
        )),
        _ => {}
    }

    let mut iter = scored.into_iter();
    let best = iter.next();
    let candidates: Vec<Scored> = iter.take(5).collect();
    let confidence = best
        .as_ref()
        .map_or(round(sigmoid(PRIOR_LOG_ODDS), 4), |b| b.confidence);
    let mut signals = best.as_ref().map(|b| b.signals.clone()).unwrap_or_default();
    signals.extend(call_signals);
    Resolution {
        band: Band::of(confidence),
        best,
        confidence,
        signals,
        candidates,
    }
}

fn score_customer(
    customer: i64,
    evidence: &Evidence,
    ani_links: &[IdentityLink],
    external_customers: &[i64],
    now: DateTime<Utc>,
) -> Scored {
    let mut signals = Vec::new();
    let mut capped = false;
    let mut weight = 0u64;
    let mut last_seen_at: Option<DateTime<Utc>> = None;

    let ani_link = ani_links.iter().find(|l| l.customer == customer);
    if let Some(link) = ani_link {
        let calls = link.call_count.max(1);
        weight += u64::from(calls);
        last_seen_at = last_seen_at.max(Some(link.last_seen_at));
        let age = now - link.last_seen_at;
        let w = ANI_MATCH_BASE + (ANI_REPEAT_SLOPE * f64::from(calls).ln()).min(ANI_REPEAT_CAP);
        signals.push(signal(
            SignalKind::AniMatch,
            w,
            format!(
                "{}, last {}",
                if calls == 1 {
                    "1 call".to_owned()
                } else {
                    format!("{calls} calls")
                },
                describe_age(age)
            ),
        ));
        let age_days = age.num_seconds() as f64 / 86_400.0;
        signals.push(signal(
            SignalKind::Recency,
            recency_weight(age_days),
            format!("last call on this number {}", describe_age(age)),
        ));
        let kept = match evidence.attestation {
            Some(Attestation::B) => Some((
                ATTESTATION_B_SHARE,
                "B: the carrier did not vouch for the caller's right to the number",
            )),
            Some(Attestation::C) => Some((
                ATTESTATION_C_SHARE,
                "C: the carrier only saw where the call entered its network",
            )),
            _ => None,
        };
        if let Some((share, why)) = kept {
            signals.push(signal(
                SignalKind::Attestation,
                -(1.0 - share) * w,
                format!("STIR/SHAKEN attestation {why}"),
            ));
        }
        if ani_links.len() > 1 {
            capped = true;
            signals.push(signal(
                SignalKind::SharedAni,
                -(ani_links.len() as f64).ln(),
                format!("number linked to {} customers", ani_links.len()),
            ));
        }
    }

    let mut external_matches = 0usize;
    for ext in &evidence.external {
        if !ext.links.iter().any(|l| l.customer == customer) {
            continue;
        }
        let w = if external_matches == 0 {
            EXTERNAL_MATCH
        } else {
            EXTERNAL_EXTRA
        };
        last_seen_at = ext
            .links
            .iter()
            .filter(|l| l.customer == customer)
            .map(|l| l.last_seen_at)
            .max()
            .max(last_seen_at);
        external_matches += 1;
        weight += 1;
        signals.push(signal(
            SignalKind::ExternalIdMatch,
            w,
            format!("{} matches", ext.name),
        ));
        if ext.links.len() > 1 {
            capped = true;
            signals.push(signal(
                SignalKind::Conflict,
                -(ext.links.len() as f64).ln(),
                format!("{} linked to {} customers", ext.name, ext.links.len()),
            ));
        }
    }

    // The number and an external id disagree.
    let others_by_external = external_customers.iter().any(|&c| c != customer);
    if external_matches > 0 && ani_link.is_none() && !ani_links.is_empty() {
        capped = true;
        signals.push(signal(
            SignalKind::Conflict,
            CONFLICT_EXTERNAL_SIDE,
            "caller number belongs to another customer".into(),
        ));
    } else if external_matches == 0 && ani_link.is_some() && others_by_external {
        capped = true;
        signals.push(signal(
            SignalKind::Conflict,
            CONFLICT_ANI_SIDE,
            "an external id names another customer".into(),
        ));
    }

    let log_odds = PRIOR_LOG_ODDS + signals.iter().map(|s| s.contribution).sum::<f64>();
    let mut confidence = sigmoid(log_odds);
    if capped {
        confidence = confidence.min(AMBIGUOUS_CAP);
    }
    Scored {
        customer,
        confidence: round(confidence, 4),
        signals,
        log_odds,
        last_seen_at,
        calls: weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
    }

    fn link(customer: i64, calls: u32, days_ago: i64) -> IdentityLink {
        IdentityLink {
            customer,
            call_count: calls,
            last_seen_at: now() - Duration::days(days_ago),
        }
    }

    fn ani(links: Vec<IdentityLink>) -> Evidence {
        Evidence {
            ani: AniEvidence::Number(links),
            external: vec![],
            attestation: None,
        }
    }

    fn crm(links: Vec<IdentityLink>) -> ExternalEvidence {
        ExternalEvidence {
            name: "crm_id".into(),
            links,
        }
    }

    fn kinds(r: &Resolution) -> Vec<&'static str> {
        r.signals.iter().map(|s| s.kind.as_str()).collect()
    }

    fn seen(customer: i64, calls: u32, seconds_ago: i64) -> IdentityLink {
        IdentityLink {
            customer,
            call_count: calls,
            last_seen_at: now() - Duration::seconds(seconds_ago),
        }
    }

    fn order(r: &Resolution) -> Vec<i64> {
        r.best
            .iter()
            .chain(&r.candidates)
            .map(|s| s.customer)
            .collect()
    }

    fn attested(level: Option<Attestation>, links: Vec<IdentityLink>) -> Resolution {
        resolve(
            &Evidence {
                attestation: level,
                ..ani(links)
            },
            now(),
        )
    }

    #[test]
    fn a_number_after_one_recent_call_is_high_only_when_not_in_doubt() {
        let recent = || vec![link(1, 1, 0)];
        assert_eq!(attested(None, recent()).band, Band::High);
        assert_eq!(attested(Some(Attestation::A), recent()).band, Band::High);
        let b = attested(Some(Attestation::B), recent());
        assert_eq!(b.band, Band::Medium, "{b:?}");
        assert!(kinds(&b).contains(&"attestation"));
        let c = attested(Some(Attestation::C), recent());
        assert_eq!(c.band, Band::Medium);
        assert!(c.confidence < b.confidence, "C weighs less than B");
    }

    #[test]
    fn a_failed_verification_makes_the_number_no_evidence() {
        let r = attested(Some(Attestation::Failed), vec![link(1, 9, 0)]);
        assert!(r.best.is_none(), "{r:?}");
        assert_eq!(r.band, Band::Low);
        assert_eq!(kinds(&r), ["attestation"]);
        // An external id still counts.
        let e = resolve(
            &Evidence {
                ani: AniEvidence::Number(vec![link(1, 9, 0)]),
                external: vec![crm(vec![link(2, 1, 0)])],
                attestation: Some(Attestation::Failed),
            },
            now(),
        );
        assert_eq!(e.best.map(|b| b.customer), Some(2));
        assert_eq!(e.band, Band::High);
    }

    #[test]
    fn on_a_shared_line_the_most_recently_seen_of_equals_ranks_first() {
        // Three customers ended one call each from this number, a minute apart: they score
        // the same, and the one heard from last ranks first, whatever their record's age.
        let r = resolve(
            &ani(vec![seen(1, 1, 180), seen(2, 1, 60), seen(3, 1, 120)]),
            now(),
        );
        assert_eq!(order(&r), [2, 3, 1]);
        assert_eq!(r.confidence, r.candidates[0].confidence, "equals");
        assert!(r.candidates[0].last_seen_at < r.best.as_ref().unwrap().last_seen_at);
        assert_eq!(r.band, Band::Medium);
    }

    #[test]
    fn among_equals_seen_at_once_the_one_with_most_calls_ranks_first() {
        let same = seen(1, 2, 60).last_seen_at;
        let links = vec![
            IdentityLink {
                customer: 1,
                call_count: 1,
                last_seen_at: same,
            },
            IdentityLink {
                customer: 2,
                call_count: 1,
                last_seen_at: same,
            },
        ];
        let r = resolve(&ani(links), now());
        assert_eq!(
            order(&r),
            [1, 2],
            "the older record, when nothing else differs"
        );
        // Past a handful of calls the repeat weight is capped: 10 and 20 calls score the same,
        // and the longer history ranks first.
        let links = vec![
            IdentityLink {
                customer: 1,
                call_count: 10,
                last_seen_at: same,
            },
            IdentityLink {
                customer: 2,
                call_count: 20,
                last_seen_at: same,
            },
        ];
        let r = resolve(&ani(links), now());
        assert_eq!(r.confidence, r.candidates[0].confidence, "equals");
        assert_eq!(order(&r), [2, 1]);
        // Fewer calls score lower, however recent (they are not equals then).
        let r = resolve(&ani(vec![seen(1, 1, 10), seen(2, 3, 3600)]), now());
        assert_eq!(order(&r), [2, 1]);
        assert!(r.confidence > r.candidates[0].confidence);
    }

    #[test]
    fn an_unknown_number_is_low_with_no_customer() {
        let r = resolve(&ani(vec![]), now());
        assert_eq!(r.band, Band::Low);
        assert!(r.best.is_none());
        assert!(r.candidates.is_empty());
        assert_eq!(kinds(&r), ["ani_match"]);
    }

    #[test]
    fn a_withheld_number_is_low_and_says_so() {
        let e = Evidence {
            ani: AniEvidence::Withheld("caller id withheld or unavailable"),
            external: vec![],
            attestation: None,
        };
        let r = resolve(&e, now());
        assert_eq!(r.band, Band::Low);
        assert!(r.best.is_none());
        assert_eq!(kinds(&r), ["withheld_ani"]);
    }

    #[test]
    fn a_number_linked_to_one_customer_recently_is_high() {
        for (calls, days) in [(1, 0), (1, 2), (4, 2), (20, 10)] {
            let r = resolve(&ani(vec![link(7, calls, days)]), now());
            assert_eq!(r.band, Band::High, "{calls} calls, {days} days ago");
            assert_eq!(r.best.as_ref().unwrap().customer, 7);
            assert_eq!(kinds(&r), ["ani_match", "recency"]);
        }
    }

    #[test]
    fn a_matching_external_id_is_high_with_or_without_the_number() {
        let only_external = Evidence {
            ani: AniEvidence::NotGiven,
            external: vec![crm(vec![link(3, 1, 400)])],
            attestation: None,
        };
        let unknown_number = Evidence {
            ani: AniEvidence::Number(vec![]),
            external: vec![crm(vec![link(3, 1, 400)])],
            attestation: None,
        };
        for (name, e) in [
            ("no number", only_external),
            ("unknown number", unknown_number),
        ] {
            let r = resolve(&e, now());
            assert_eq!(r.band, Band::High, "{name}");
            assert_eq!(r.best.unwrap().customer, 3, "{name}");
        }
    }

    #[test]
    fn number_and_external_id_agreeing_score_at_least_either_alone() {
        for days in [0, 30, 365, 3650] {
            let by_ani = resolve(&ani(vec![link(1, 2, days)]), now());
            let by_ext = resolve(
                &Evidence {
                    ani: AniEvidence::NotGiven,
                    external: vec![crm(vec![link(1, 2, days)])],
                    attestation: None,
                },
                now(),
            );
            let both = resolve(
                &Evidence {
                    ani: AniEvidence::Number(vec![link(1, 2, days)]),
                    external: vec![crm(vec![link(1, 2, days)])],
                    attestation: None,
                },
                now(),
            );
            assert!(both.confidence >= by_ani.confidence, "{days} days");
            assert!(both.confidence >= by_ext.confidence, "{days} days");
            assert_eq!(both.band, Band::High, "{days} days");
        }
    }

    #[test]
    fn a_shared_number_is_at_most_medium_with_the_others_as_candidates() {
        for n in [2, 3, 6] {
            let links = (1..=n).map(|c| link(c, 5, 1)).collect();
            let r = resolve(&ani(links), now());
            assert_ne!(r.band, Band::High, "{n} customers");
            assert!(kinds(&r).contains(&"shared_ani"), "{n} customers");
            let expected_candidates = (n as usize - 1).min(5);
            assert_eq!(r.candidates.len(), expected_candidates, "{n} customers");
            assert!(
                r.candidates
                    .iter()
                    .all(|c| c.customer != r.best.as_ref().unwrap().customer)
            );
        }
    }

    #[test]
    fn the_shared_number_customer_with_more_recent_history_ranks_first() {
        let r = resolve(&ani(vec![link(1, 2, 200), link(2, 2, 1)]), now());
        assert_eq!(r.best.unwrap().customer, 2);
    }

    #[test]
    fn number_and_external_id_disagreeing_pick_the_external_id_with_a_conflict() {
        for (calls, days) in [(1, 0), (20, 0), (3, 90)] {
            let e = Evidence {
                ani: AniEvidence::Number(vec![link(1, calls, days)]),
                external: vec![crm(vec![link(2, 1, 300)])],
                attestation: None,
            };
            let r = resolve(&e, now());
            let best = r.best.as_ref().unwrap();
            assert_eq!(best.customer, 2, "{calls} calls {days} days");
            assert!(kinds(&r).contains(&"conflict"));
            assert_ne!(r.band, Band::High);
            assert_eq!(r.candidates.len(), 1);
            assert_eq!(r.candidates[0].customer, 1);
        }
    }

    #[test]
    fn the_older_the_last_call_the_lower_the_recency_contribution() {
        let mut previous = f64::INFINITY;
        for days in [0, 1, 7, 30, 90, 365, 3650] {
            let r = resolve(&ani(vec![link(1, 3, days)]), now());
            let recency = r
                .signals
                .iter()
                .find(|s| s.kind == SignalKind::Recency)
                .unwrap()
                .contribution;
            assert!(recency < previous || (recency == previous && days > 365));
            previous = recency;
        }
        assert!(recency_weight(0.0) > recency_weight(1.0));
        assert!(recency_weight(365.0) > recency_weight(3650.0));
    }

    #[test]
    fn a_number_not_seen_for_a_year_asks_for_verification() {
        let r = resolve(&ani(vec![link(1, 1, 365)]), now());
        assert_eq!(r.band, Band::Medium);
    }

    #[test]
    fn the_same_data_gives_the_same_score() {
        let e = Evidence {
            ani: AniEvidence::Number(vec![link(2, 3, 4), link(1, 3, 4)]),
            external: vec![crm(vec![link(1, 1, 9)])],
            attestation: None,
        };
        let a = resolve(&e, now());
        let b = resolve(&e, now());
        assert_eq!(a, b);
        let reversed = Evidence {
            ani: AniEvidence::Number(vec![link(1, 3, 4), link(2, 3, 4)]),
            external: e.external.clone(),
            attestation: None,
        };
        assert_eq!(resolve(&reversed, now()), a);
    }

    #[test]
    fn confidence_is_the_sigmoid_of_prior_plus_contributions() {
        let r = resolve(&ani(vec![link(1, 4, 2)]), now());
        let sum: f64 = r.signals.iter().map(|s| s.contribution).sum();
        assert!((sigmoid(PRIOR_LOG_ODDS + sum) - r.confidence).abs() < 1e-3);
    }

    #[test]
    fn bands_follow_the_documented_thresholds() {
        assert_eq!(Band::of(0.8), Band::High);
        assert_eq!(Band::of(0.79), Band::Medium);
        assert_eq!(Band::of(0.5), Band::Medium);
        assert_eq!(Band::of(0.49), Band::Low);
        assert_eq!(Band::High.action(), "greet");
        assert_eq!(Band::Medium.action(), "verify");
        assert_eq!(Band::Low.action(), "treat_as_new");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(describe_age(Duration::seconds(10)), "just now");
        assert_eq!(describe_age(Duration::minutes(1)), "1 minute ago");
        assert_eq!(describe_age(Duration::hours(5)), "5 hours ago");
        assert_eq!(describe_age(Duration::days(2)), "2 days ago");
    }
}
