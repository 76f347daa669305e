//! Plans: how many calls a tenant may make a month and how many requests a minute.
//!
//! Built in, from the product's price list: `free` (100 calls a month, 100 requests a
//! minute), `starter` (10,000 and 600), `growth` (50,000 and 3,000), `scale` (250,000 and
//! 10,000) and `unlimited` (no quota, no rate limit). An operator's TOML file
//! (`STICKY_PLANS_FILE`) adds plans or replaces built-in ones by name:
//!
//! ```toml
//! [plans.tiny]
//! calls_per_month = 5
//! requests_per_minute = 1000
//! price_cents = 900
//! checkout_url = "https://buy.stripe.com/test_abc"
//! label = "Tiny"
//! ```
//!
//! A field left out means no limit (`calls_per_month`, `requests_per_minute`) or nothing to
//! show (`price_cents`, `checkout_url`, `label`). Periods are calendar months in UTC.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Deserialize;

/// The plan of tenants made by the operator unless another is named.
pub const OPERATOR_DEFAULT: &str = "unlimited";
/// The plan of tenants that sign up themselves.
pub const SIGNUP_DEFAULT: &str = "free";

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name (the table's key in the file).
    #[serde(skip)]
    pub name: String,
    /// Calls included each month; `None`: no quota.
    pub calls_per_month: Option<u64>,
    /// Requests a minute; `None`: no rate limit.
    pub requests_per_minute: Option<u32>,
    /// Price per month in cents, for offers.
    pub price_cents: Option<u64>,
    /// Where to pay for it (a payment link), for offers.
    pub checkout_url: Option<String>,
    /// A name to show.
    pub label: Option<String>,
}

impl Plan {
    fn builtin(name: &str, calls: Option<u64>, rpm: Option<u32>, label: &str) -> Self {
        Self {
            name: name.to_owned(),
            calls_per_month: calls,
            requests_per_minute: rpm,
            price_cents: None,
            checkout_url: None,
            label: Some(label.to_owned()),
        }
    }
}

/// The plans a server knows.
#[derive(Debug, Clone)]
pub struct Plans {
    by_name: BTreeMap<String, Arc<Plan>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    #[serde(default)]
    plans: BTreeMap<String, Plan>,
}

impl Default for Plans {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Plans {
    /// The built-in plans.
    pub fn builtin() -> Self {
        let plans = [
            Plan::builtin("free", Some(100), Some(100), "Free"),
            Plan::builtin("starter", Some(10_000), Some(600), "Starter"),
            Plan::builtin("growth", Some(50_000), Some(3_000), "Growth"),
            Plan::builtin("scale", Some(250_000), Some(10_000), "Scale"),
            Plan::builtin("unlimited", None, None, "Unlimited"),
        ];
        Self {
            by_name: plans
                .into_iter()
                .map(|p| (p.name.clone(), Arc::new(p)))
                .collect(),
        }
    }

    /// The built-in plans with those of the TOML `text` added or replacing them.
    ///
    /// # Errors
    /// Text that is not such a file (the message says where), a plan name that is not 1–64
    /// of `a-z0-9_-`, a rate limit of 0 (a quota of 0 is allowed: a suspended tenant).
    pub fn with_file_text(text: &str) -> Result<Self, String> {
        let file: PlansFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut plans = Self::builtin();
        for (name, mut plan) in file.plans {
            if crate::keys::parse_tenant_name(&name).is_err() {
                return Err(format!(
                    "plan `{name}`: names are 1 to 64 characters of a-z, 0-9, `_` and `-`"
                ));
            }
            if plan.requests_per_minute == Some(0) {
                return Err(format!(
                    "plan `{name}`: requests_per_minute must be at least 1 (leave it out for no limit)"
                ));
            }
            plan.name.clone_from(&name);
            plans.by_name.insert(name, Arc::new(plan));
        }
        Ok(plans)
    }

    /// The plans of the file at `path` (built-in only when `None`).
    ///
    /// # Errors
    /// An unreadable or invalid file; the message names it.
    pub fn load(path: Option<&Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self::builtin());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("STICKY_PLANS_FILE {}: {e}", path.display()))?;
        Self::with_file_text(&text)
            .map_err(|e| format!("STICKY_PLANS_FILE {}: {e}", path.display()))
    }

    /// The plan named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plan>> {
        self.by_name.get(name).cloned()
    }

    /// The plan named `name`, or an error that lists the known ones.
    ///
    /// # Errors
    /// An unknown name.
    pub fn require(&self, name: &str) -> Result<Arc<Plan>, String> {
        self.get(name).ok_or_else(|| {
            format!(
                "no plan named `{name}` (known: {})",
                self.by_name.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Every plan, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Plan>> {
        self.by_name.values()
    }
}

/// The billing period containing `at`: its key (`2026-12`), its start and its end (the next
/// period's start), in UTC.
pub fn period(at: DateTime<Utc>) -> (String, DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at);
    let (y, m) = if at.month() == 12 {
        (at.year() + 1, 1)
    } else {
        (at.year(), at.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(at);
    (format!("{:04}-{:02}", at.year(), at.month()), start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_list_is_built_in() {
        let p = Plans::builtin();
        let free = p.get("free").unwrap();
        assert_eq!(
            (free.calls_per_month, free.requests_per_minute),
            (Some(100), Some(100))
        );
        let scale = p.get("scale").unwrap();
        assert_eq!(
            (scale.calls_per_month, scale.requests_per_minute),
            (Some(250_000), Some(10_000))
        );
        let unlimited = p.get("unlimited").unwrap();
        assert_eq!(
            (unlimited.calls_per_month, unlimited.requests_per_minute),
            (None, None)
        );
        assert!(
            p.require("gold")
                .unwrap_err()
                .contains("known: free, growth")
        );
    }

    #[test]
    fn a_file_adds_and_replaces_plans() {
        let p = Plans::with_file_text(
            "[plans.tiny]\ncalls_per_month = 5\nrequests_per_minute = 1000\nprice_cents = 900\n\
             checkout_url = \"https://buy.example/x\"\nlabel = \"Tiny\"\n\
             [plans.free]\ncalls_per_month = 50\n",
        )
        .unwrap();
        let tiny = p.get("tiny").unwrap();
        assert_eq!(tiny.calls_per_month, Some(5));
        assert_eq!(tiny.price_cents, Some(900));
        assert_eq!(tiny.name, "tiny");
        let free = p.get("free").unwrap();
        assert_eq!(
            (free.calls_per_month, free.requests_per_minute),
            (Some(50), None)
        );
        assert!(p.get("scale").is_some());
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        assert!(
            Plans::with_file_text("[plans.tiny]\ncalls_per_mnth = 5\n")
                .unwrap_err()
                .contains("calls_per_mnth")
        );
        assert!(Plans::with_file_text("[plans.Tiny]\n").is_err());
        assert!(
            Plans::with_file_text("[plans.x]\nrequests_per_minute = 0\n")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(Plans::with_file_text("[plans.x]\ncalls_per_month = -1\n").is_err());
    }

    #[test]
    fn periods_are_calendar_months_in_utc() {
        let at = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        let (key, start, end) = period(at);
        assert_eq!(key, "2026-12");
        assert_eq!(start, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(end, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        let (key, _, end) = period(Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(key, "2026-02");
        assert_eq!(end, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
    }
}
