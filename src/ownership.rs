//! Who owns a conversation, as one state machine: every status change anywhere in the gateway
//! (a bot turn handing off, the queue assigning, an agent taking, transferring, resolving or
//! handing back, a customer writing into a resolved conversation) is checked here, so no path can
//! invent an edge of its own.
//!
//! ```text
//!        hand off            assign / take
//!   bot ──────────▶ queued ───────────────▶ assigned ──┐ transfer to an agent
//!    ▲ ▲  ◀──────── │  ▲ ◀──────────────────── │  ▲ ◀──┘
//!    │ │ hand back  │  └─ transfer to a team ──┘  │
//!    │ └────────────┼──── hand back ──────────────┘
//!    │   reopen     ▼            resolve
//!    └────────── resolved ◀─────────────── (bot, queued, assigned)
//! ```
//!
//! While a conversation is `queued` or `assigned` a person owns it and the bot stays silent; the
//! store enforces that when it commits a bot turn.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The bot answers.
    Bot,
    /// Waiting for a person.
    Queued,
    /// A person (the assignee) answers.
    Assigned,
    /// Closed; the customer writing again reopens it to the bot.
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Bot => "bot",
            Status::Queued => "queued",
            Status::Assigned => "assigned",
            Status::Resolved => "resolved",
        }
    }

    /// A person owns the conversation: the bot must not post to it.
    pub fn human_owned(self) -> bool {
        HUMAN_OWNED.contains(&self)
    }
}

/// The statuses in which a person owns a conversation.
pub const HUMAN_OWNED: [Status; 2] = [Status::Queued, Status::Assigned];

/// `'queued', 'assigned'`: [`HUMAN_OWNED`] as an SQL list, for statements that check ownership.
pub fn human_owned_sql() -> String {
    HUMAN_OWNED
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bot" => Ok(Status::Bot),
            "queued" => Ok(Status::Queued),
            "assigned" => Ok(Status::Assigned),
            "resolved" => Ok(Status::Resolved),
            other => Err(format!("unknown conversation status '{other}'")),
        }
    }
}

/// What is done to a conversation; recorded in its event as `details.action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A handoff rule fired (asked for a person, emotion, repeated no-answer).
    HandOff,
    /// The queue gave it to an agent, or an agent took it.
    Assign,
    /// Moved to another agent.
    TransferToAgent,
    /// Moved back to the queue for a team.
    TransferToTeam,
    /// A person gives it back to the bot.
    HandBack,
    Resolve,
    /// The customer wrote into a resolved conversation.
    Reopen,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::HandOff => "hand_off",
            Action::Assign => "assign",
            Action::TransferToAgent => "transfer_to_agent",
            Action::TransferToTeam => "transfer_to_team",
            Action::HandBack => "hand_back",
            Action::Resolve => "resolve",
            Action::Reopen => "reopen",
        }
    }

    /// The status the action leads to.
    pub fn target(self) -> Status {
        match self {
            Action::HandOff | Action::TransferToTeam => Status::Queued,
            Action::Assign | Action::TransferToAgent => Status::Assigned,
            Action::HandBack | Action::Reopen => Status::Bot,
            Action::Resolve => Status::Resolved,
        }
    }
}

/// An action that is not allowed from the conversation's current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a conversation that is {from}", action = .action.as_str().replace('_', " "))]
pub struct Refused {
    pub from: Status,
    pub action: Action,
}

/// The status after `action`, or why it is refused.
pub fn next(from: Status, action: Action) -> Result<Status, Refused> {
    use Action::*;
    use Status::*;
    let allowed = match action {
        // A resolved conversation reopens and hands off in the same turn.
        HandOff => matches!(from, Bot | Resolved),
        // An agent may take a conversation from the bot before any rule fired.
        Assign => matches!(from, Bot | Queued),
        TransferToAgent => matches!(from, Queued | Assigned),
        TransferToTeam => matches!(from, Queued | Assigned),
        HandBack => matches!(from, Queued | Assigned),
        Resolve => matches!(from, Bot | Queued | Assigned),
        Reopen => matches!(from, Resolved),
    };
    if allowed {
        Ok(action.target())
    } else {
        Err(Refused { from, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Status; 4] = [
        Status::Bot,
        Status::Queued,
        Status::Assigned,
        Status::Resolved,
    ];

    #[test]
    fn the_lifecycle_bot_queued_assigned_resolved_bot() {
        let mut s = Status::Bot;
        for action in [
            Action::HandOff,
            Action::Assign,
            Action::Resolve,
            Action::Reopen,
        ] {
            s = next(s, action).expect("allowed");
        }
        assert_eq!(s, Status::Bot);
        assert_eq!(next(Status::Assigned, Action::HandBack), Ok(Status::Bot));
        assert_eq!(
            next(Status::Assigned, Action::TransferToTeam),
            Ok(Status::Queued)
        );
        assert_eq!(
            next(Status::Assigned, Action::TransferToAgent),
            Ok(Status::Assigned)
        );
    }

    #[test]
    fn refused_edges() {
        // An assigned conversation cannot be taken again (a race loser gets a conflict), a
        // resolved one is not assigned or handed back, the bot does not hand off what a person owns.
        for (from, action) in [
            (Status::Assigned, Action::Assign),
            (Status::Resolved, Action::Assign),
            (Status::Resolved, Action::HandBack),
            (Status::Resolved, Action::Resolve),
            (Status::Queued, Action::HandOff),
            (Status::Assigned, Action::HandOff),
            (Status::Bot, Action::HandBack),
            (Status::Bot, Action::Reopen),
            (Status::Bot, Action::TransferToAgent),
        ] {
            let refused = next(from, action).expect_err("refused");
            assert_eq!(refused, Refused { from, action });
        }
        let message = next(Status::Resolved, Action::HandBack)
            .expect_err("refused")
            .to_string();
        assert_eq!(message, "cannot hand back a conversation that is resolved");
    }

    #[test]
    fn every_action_lands_on_its_target_and_round_trips_names() {
        for from in ALL {
            assert_eq!(from.as_str().parse::<Status>(), Ok(from));
            for action in [
                Action::HandOff,
                Action::Assign,
                Action::TransferToAgent,
                Action::TransferToTeam,
                Action::HandBack,
                Action::Resolve,
                Action::Reopen,
            ] {
                if let Ok(to) = next(from, action) {
                    assert_eq!(to, action.target());
                }
            }
        }
        assert!("closed".parse::<Status>().is_err());
        assert!(Status::Queued.human_owned() && Status::Assigned.human_owned());
        assert!(!Status::Bot.human_owned() && !Status::Resolved.human_owned());
    }
}
