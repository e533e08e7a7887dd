//! Frontdesk: an omnichannel customer-support gateway.
//!
//! Channels (`frontdesk-channels`) turn platform events into normalized messages; the [`router`]
//! stores them and runs the bot's [`pipeline`]; replies leave through the [`outbox`]; everything is
//! kept by the [`store`] on SQLite or PostgreSQL and served over [`http`]. Conversations a person
//! should handle go through the [`queue`] to [`agents`], who work at the [`desk`] (the console,
//! fed live by [`live`]); who owns a conversation is one state machine, [`ownership`].

pub mod agents;
pub mod app;
pub mod batch;
pub mod bench;
pub mod bench_relay;
pub mod checkpoints;
pub mod cli;
pub mod config;
pub mod desk;
pub mod embed;
pub mod handoff;
pub mod http;
pub mod i18n;
pub mod knowledge;
pub mod live;
pub mod metrics;
pub mod models;
pub mod nlu;
pub mod outbox;
pub mod ownership;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod replies;
pub mod router;
pub mod sessions;
pub mod store;
pub mod vectors;
