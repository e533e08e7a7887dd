//! When the bot stops and a person takes over: the rules, in one place.
//!
//! A customer who asks for a person gets one; so does an angry one (with a higher priority), an
//! anxious one the bot cannot answer right away, and one the bot failed to answer several times
//! in a row. Anxious customers mostly ask answerable, urgent questions ("my card expired, how do I
//! pay?"): sending them all to people would take the bot's best answers away from them, so the
//! anxious rule only fires when the bot has no confident answer. The rule
//! that fired, with its score, is stored with the conversation's status event, so agents and
//! admins can see why a conversation came to them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::nlu::intent::IntentPrediction;

/// `[handoff]` in the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    pub enabled: bool,
    /// The intent that means "let me talk to a person".
    pub human_intent: String,
    /// Its minimum calibrated confidence (and it must not be out of scope).
    pub human_intent_confidence: f32,
    /// p(angry) at or above which a customer goes to a person; none = the threshold the model
    /// tuned on held-out data (to catch 90 % of angry messages).
    pub angry_threshold: Option<f32>,
    /// The same for anxious customers.
    pub anxious_threshold: Option<f32>,
    /// Messages in a row the bot could not answer before a person takes over (0 = never).
    pub max_unanswered: i64,
    /// Priority of conversations handed over because the customer is angry (others keep theirs;
    /// higher is served first).
    pub angry_priority: i64,
    pub anxious_priority: i64,
    /// When people answer; outside these hours a queued customer is told when someone will
    /// answer, and the conversation waits as a ticket. None = always staffed.
    pub hours: Option<WorkingHours>,
    /// A conversation waiting for or owned by a person with no message for this long is resolved
    /// by timeout (its agent's slot freed); 0 = never.
    pub idle_resolve_secs: u64,
}

/// `[handoff.hours]`: `utc_offset = "+03:00"`, `days = ["mon", ..., "fri"]`, `open = "09:00"`,
/// `close = "18:00"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkingHours {
    pub utc_offset: String,
    pub days: Vec<String>,
    pub open: String,
    pub close: String,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minutes(hhmm: &str) -> Result<i64, String> {
    let (h, m) = hhmm
        .split_once(':')
        .ok_or_else(|| format!("'{hhmm}' is not HH:MM"))?;
    let (h, m): (i64, i64) = (
        h.parse().map_err(|_| format!("'{hhmm}' is not HH:MM"))?,
        m.parse().map_err(|_| format!("'{hhmm}' is not HH:MM"))?,
    );
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || h * 60 + m > 24 * 60 {
        return Err(format!("'{hhmm}' is not a time of day"));
    }
    Ok(h * 60 + m)
}

impl WorkingHours {
    fn offset_minutes(&self) -> Result<i64, String> {
        let s = self.utc_offset.trim();
        let (sign, rest) = match s.chars().next() {
            Some('+') => (1, &s[1..]),
            Some('-') => (-1, &s[1..]),
            _ => return Err(format!("utc_offset '{s}' must look like +03:00 or -05:00")),
        };
        Ok(sign * minutes(rest)?)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.offset_minutes()?;
        let (open, close) = (minutes(&self.open)?, minutes(&self.close)?);
        if open >= close {
            return Err(format!(
                "open {} is not before close {}",
                self.open, self.close
            ));
        }
        if self.days.is_empty() {
            return Err("no working days".into());
        }
        for d in &self.days {
            if !DAYS.contains(&d.as_str()) {
                return Err(format!("unknown day '{d}' (use {})", DAYS.join(", ")));
            }
        }
        Ok(())
    }

    /// None while open; otherwise when it opens next, e.g. "mon 09:00 (UTC+03:00)".
    pub fn closed_until(&self, now_ms: i64) -> Option<String> {
        let offset = self.offset_minutes().ok()?;
        let (open, close) = (minutes(&self.open).ok()?, minutes(&self.close).ok()?);
        let local_min = now_ms.div_euclid(60_000) + offset;
        let day = local_min.div_euclid(24 * 60);
        let minute = local_min.rem_euclid(24 * 60);
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = |d: i64| DAYS[(d + 3).rem_euclid(7) as usize];
        let works = |d: i64| self.days.iter().any(|x| x == weekday(d));
        if works(day) && minute >= open && minute < close {
            return None;
        }
        (0..8)
            .map(|ahead| day + ahead)
            .find(|d| works(*d) && (*d > day || minute < open))
            .map(|d| format!("{} {} (UTC{})", weekday(d), self.open, self.utc_offset))
    }
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            human_intent: "human_agent".into(),
            human_intent_confidence: 0.5,
            angry_threshold: None,
            anxious_threshold: None,
            max_unanswered: 2,
            angry_priority: 2,
            anxious_priority: 1,
            hours: None,
            idle_resolve_secs: 0,
        }
    }
}

/// The rule that sent a conversation to a person.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// `asked_for_human`, `angry`, `anxious` or `unanswered`.
    pub rule: &'static str,
    /// For people: "angry, 0.93".
    pub reason: String,
    pub details: serde_json::Value,
    /// The priority the conversation should have at least.
    pub priority: i64,
    /// The customer is upset: the bot apologises when it hands over.
    pub apologise: bool,
}

/// What the rules look at for one message.
pub struct Signals<'a> {
    pub intent: Option<&'a IntentPrediction>,
    /// Every emotion's probability.
    pub emotions: &'a BTreeMap<String, f32>,
    /// The model's tuned thresholds per emotion.
    pub tuned: &'a BTreeMap<String, f32>,
    /// The bot has something for this message: an article, suggestions or small talk.
    pub answered: bool,
    /// Messages in a row the bot could not answer, this one included.
    pub unanswered: i64,
}

impl HandoffConfig {
    /// The first rule that fires, in order: asked for a person, angry, anxious, unanswered.
    pub fn check(&self, s: &Signals<'_>) -> Option<Fired> {
        if !self.enabled {
            return None;
        }
        if let Some(i) = s.intent {
            if i.name == self.human_intent
                && !i.out_of_scope
                && i.confidence >= self.human_intent_confidence
            {
                return Some(Fired {
                    rule: "asked_for_human",
                    reason: format!("asked for a person, {:.2}", i.confidence),
                    details: json!({ "rule": "asked_for_human", "intent": i.name, "confidence": i.confidence }),
                    priority: 0,
                    apologise: false,
                });
            }
        }
        for (rule, configured, priority) in [
            ("angry", self.angry_threshold, self.angry_priority),
            ("anxious", self.anxious_threshold, self.anxious_priority),
        ] {
            let Some(&score) = s.emotions.get(rule) else {
                continue;
            };
            let threshold = configured
                .or_else(|| s.tuned.get(rule).copied())
                .unwrap_or(0.5);
            if score >= threshold && (rule == "angry" || !s.answered) {
                return Some(Fired {
                    rule,
                    reason: format!("{rule}, {score:.2}"),
                    details: json!({ "rule": rule, "emotion": rule, "score": score, "threshold": threshold }),
                    priority,
                    apologise: true,
                });
            }
        }
        if self.max_unanswered > 0 && s.unanswered >= self.max_unanswered {
            return Some(Fired {
                rule: "unanswered",
                reason: format!("{} messages in a row without an answer", s.unanswered),
                details: json!({ "rule": "unanswered", "count": s.unanswered, "max": self.max_unanswered }),
                priority: 0,
                apologise: false,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_hours_say_when_someone_answers() {
        let hours = WorkingHours {
            utc_offset: "+03:00".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
            open: "09:00".into(),
            close: "18:00".into(),
        };
        hours.validate().expect("valid");
        // 2026-11-20 is a Friday. 10:00 UTC = 13:00 at +03:00: open.
        let fri_10_utc = 1_795_168_800_000;
        assert_eq!(hours.closed_until(fri_10_utc), None);
        // Friday 16:00 UTC = 19:00 local: closed until Monday.
        let fri_16_utc = fri_10_utc + 6 * 3_600_000;
        assert_eq!(
            hours.closed_until(fri_16_utc).as_deref(),
            Some("mon 09:00 (UTC+03:00)")
        );
        // Friday 05:00 UTC = 08:00 local: opens the same day.
        let fri_5_utc = fri_10_utc - 5 * 3_600_000;
        assert_eq!(
            hours.closed_until(fri_5_utc).as_deref(),
            Some("fri 09:00 (UTC+03:00)")
        );
        let mut bad = hours.clone();
        bad.open = "19:00".into();
        assert!(bad.validate().is_err());
        bad.open = "9".into();
        assert!(bad.validate().is_err());
        let mut bad = hours;
        bad.days = vec!["monday".into()];
        assert!(bad.validate().is_err());
    }
    use crate::nlu::intent::RankedIntent;

    fn intent(name: &str, confidence: f32, out_of_scope: bool) -> IntentPrediction {
        IntentPrediction {
            name: name.into(),
            confidence,
            score: confidence,
            out_of_scope,
            ranking: vec![RankedIntent {
                name: name.into(),
                confidence,
            }],
        }
    }

    fn emotions(pairs: &[(&str, f32)]) -> BTreeMap<String, f32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn each_rule_fires_on_its_own_signal_and_in_order() {
        let c = HandoffConfig::default();
        let tuned = emotions(&[("angry", 0.3), ("anxious", 0.6)]);
        let angry = emotions(&[("angry", 0.35), ("neutral", 0.65)]);
        let human = intent("human_agent", 0.9, false);
        let fired = c
            .check(&Signals {
                intent: Some(&human),
                emotions: &angry,
                tuned: &tuned,
                answered: false,
                unanswered: 5,
            })
            .expect("fired");
        assert_eq!(fired.rule, "asked_for_human");
        let other = intent("billing_question", 0.9, false);
        let fired = c
            .check(&Signals {
                intent: Some(&other),
                emotions: &angry,
                tuned: &tuned,
                answered: false,
                unanswered: 0,
            })
            .expect("angry above its tuned threshold, though not the likeliest emotion");
        assert_eq!(
            (fired.rule, fired.priority, fired.apologise),
            ("angry", 2, true)
        );
        assert_eq!(fired.reason, "angry, 0.35");
        let none = BTreeMap::new();
        let fired = c
            .check(&Signals {
                intent: None,
                emotions: &none,
                tuned: &none,
                answered: false,
                unanswered: 2,
            })
            .expect("fired");
        assert_eq!(fired.rule, "unanswered");
        let anxious = emotions(&[("anxious", 0.9)]);
        let signals = |answered| Signals {
            intent: Some(&other),
            emotions: &anxious,
            tuned: &tuned,
            answered,
            unanswered: 0,
        };
        assert_eq!(c.check(&signals(false)).expect("fired").rule, "anxious");
        assert_eq!(c.check(&signals(true)), None, "answered: the bot keeps it");
    }

    #[test]
    fn weak_or_out_of_scope_signals_do_not_fire() {
        let c = HandoffConfig {
            angry_threshold: Some(0.5),
            ..HandoffConfig::default()
        };
        let tuned = emotions(&[("angry", 0.1), ("anxious", 0.6)]);
        let unsure = intent("human_agent", 0.3, false);
        let oos = intent("human_agent", 0.9, true);
        let calm = emotions(&[("angry", 0.4), ("anxious", 0.2)]);
        for i in [&unsure, &oos] {
            assert_eq!(
                c.check(&Signals {
                    intent: Some(i),
                    emotions: &calm,
                    tuned: &tuned,
                    answered: false,
                    unanswered: 1
                }),
                None,
                "the configured 0.5 wins over the tuned 0.1"
            );
        }
        let off = HandoffConfig {
            enabled: false,
            ..HandoffConfig::default()
        };
        let human = intent("human_agent", 0.9, false);
        assert_eq!(
            off.check(&Signals {
                intent: Some(&human),
                emotions: &calm,
                tuned: &tuned,
                answered: false,
                unanswered: 9
            }),
            None
        );
    }
}
