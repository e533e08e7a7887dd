//! Frontdesk: an omnichannel customer-support gateway.
//!
//! Channels (`frontdesk-channels`) turn platform events into normalized messages; the [`router`]
//! stores them and runs the bot's [`pipeline`]; replies leave through the [`outbox`]; everything is
//! kept by the [`store`] on SQLite or PostgreSQL and served over [`http`].

pub mod app;
pub mod bench;
pub mod cli;
pub mod config;
pub mod embed;
pub mod handoff;
pub mod http;
pub mod i18n;
pub mod knowledge;
pub mod metrics;
pub mod models;
pub mod nlu;
pub mod outbox;
pub mod pipeline;
pub mod router;
pub mod store;
pub mod vectors;
