//! What a stored context says as of the moment a start answers:
//!
//! - promised callbacks (open intents with a due time) get a state (`open`, `due`,
//!   `overdue`) and are listed first, overdue ones ahead, so the agent who picks up the call
//!   sees a missed promise before anything else;
//! - variables given a time to live are left out once it has passed (the hourly sweep then
//!   deletes them), and the expiry times themselves are never sent.
//!
//! A context with neither (the common case) is seen to have none without decoding it.

use chrono::{DateTime, Duration, Utc};

use super::{CallbackState, ContextJson, CustomerContext, Engine, StartAnswer};
use crate::error::EngineError;

/// How long before its due time a callback counts as `due`.
pub const CALLBACK_DUE_WINDOW: Duration = Duration::hours(1);

/// Sets the state of every callback in `context` as of `now` and moves callbacks ahead of the
/// other open intents: overdue first, then due, then open, each earliest due first. The other
/// intents keep their order (most recently touched first). Returns whether anything was a
/// callback.
pub fn mark_callbacks(context: &mut CustomerContext, now: DateTime<Utc>) -> bool {
    let mut any = false;
    for intent in &mut context.open_intents {
        intent.state = intent.due_at.map(|due| {
            any = true;
            if due < now {
                CallbackState::Overdue
            } else if due - now <= CALLBACK_DUE_WINDOW {
                CallbackState::Due
            } else {
                CallbackState::Open
            }
        });
    }
    if any {
        // Stable: intents that are not callbacks keep their order behind the callbacks.
        context
            .open_intents
            .sort_by_key(|i| match (i.state, i.due_at) {
                (Some(CallbackState::Overdue), due) => (0, due),
                (Some(CallbackState::Due), due) => (1, due),
                (Some(CallbackState::Open), due) => (2, due),
                (None, _) => (3, None),
            });
    }
    any
}

/// Removes from `context` the variables whose time to live has passed by `now`, and the
/// expiry times (which are not part of an answer). Returns whether there were any.
pub fn drop_expired_variables(context: &mut CustomerContext, now: DateTime<Utc>) -> bool {
    if context.variable_expiry.is_empty() {
        return false;
    }
    for (name, expires_at) in std::mem::take(&mut context.variable_expiry) {
        if expires_at <= now {
            context.variables.remove(&name);
        }
    }
    true
}

impl Engine {
    /// `answer` as of now: callbacks' states set, expired variables left out.
    pub(super) fn as_of_now(&self, mut answer: StartAnswer) -> Result<StartAnswer, EngineError> {
        let Some(context) = &answer.context else {
            return Ok(answer);
        };
        let raw = context.get().get();
        if !raw.contains("\"due_at\"") && !raw.contains("\"variable_expiry\"") {
            return Ok(answer);
        }
        let mut decoded = context.decode()?;
        let now = crate::now();
        let expiring = drop_expired_variables(&mut decoded, now);
        if mark_callbacks(&mut decoded, now) | expiring {
            answer.context = Some(ContextJson::new(&decoded)?);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::engine::OpenIntent;

    fn intent(name: &str, due_at: Option<DateTime<Utc>>) -> OpenIntent {
        OpenIntent {
            intent: name.into(),
            opened_at: Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap(),
            last_call_id: None,
            due_at,
            state: None,
        }
    }

    fn context(open_intents: Vec<OpenIntent>) -> CustomerContext {
        CustomerContext {
            variables: BTreeMap::new(),
            open_intents,
            variable_expiry: Default::default(),
            recent_calls: vec![],
            call_count: 1,
            first_seen_at: None,
            last_seen_at: None,
        }
    }

    #[test]
    fn states_follow_the_due_time_and_callbacks_come_first() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap();
        let mut c = context(vec![
            intent("refund", None),
            intent("later", Some(now + Duration::hours(5))),
            intent("soon", Some(now + Duration::minutes(30))),
            intent("billing", None),
            intent("missed_late", Some(now - Duration::minutes(1))),
            intent("missed_early", Some(now - Duration::days(1))),
            intent("at_the_hour", Some(now + CALLBACK_DUE_WINDOW)),
        ]);
        assert!(mark_callbacks(&mut c, now));
        let got: Vec<(&str, Option<CallbackState>)> = c
            .open_intents
            .iter()
            .map(|i| (i.intent.as_str(), i.state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("missed_early", Some(CallbackState::Overdue)),
                ("missed_late", Some(CallbackState::Overdue)),
                ("soon", Some(CallbackState::Due)),
                ("at_the_hour", Some(CallbackState::Due)),
                ("later", Some(CallbackState::Open)),
                ("refund", None),
                ("billing", None),
            ]
        );
    }

    #[test]
    fn expired_variables_and_every_expiry_time_leave_the_answer() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap();
        let mut c = context(vec![]);
        for name in ["kept", "otp", "offer", "at_now"] {
            c.variables.insert(name.into(), serde_json::json!(name));
        }
        c.variable_expiry
            .insert("otp".into(), now - Duration::seconds(1));
        c.variable_expiry.insert("at_now".into(), now);
        c.variable_expiry
            .insert("offer".into(), now + Duration::hours(1));
        assert!(drop_expired_variables(&mut c, now));
        assert_eq!(
            c.variables.keys().collect::<Vec<_>>(),
            ["kept", "offer"],
            "expired at or before now: gone"
        );
        assert!(c.variable_expiry.is_empty());
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("variable_expiry"), "{json}");
        // Without expiry times there is nothing to do.
        assert!(!drop_expired_variables(&mut c, now));
    }

    #[test]
    fn a_context_without_callbacks_is_left_alone() {
        let now = Utc.with_ymd_and_hms(2026, 12, 5, 12, 0, 0).unwrap();
        let mut c = context(vec![intent("b", None), intent("a", None)]);
        let before = c.clone();
        assert!(!mark_callbacks(&mut c, now));
        assert_eq!(c, before);
    }
}
