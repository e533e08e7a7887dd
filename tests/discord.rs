//! The Discord channel end to end: the real `frontdesk` binary with its real serenity client,
//! against a fake Discord REST API and gateway on 127.0.0.1 (`support/discord_fake.rs`).

mod common;
mod support {
    pub mod discord_fake;
}

use std::time::Duration;

use common::{backends, Backend, Options, Server};
use serde_json::Value;
use support::discord_fake::FakeDiscord;

const TOKEN: &str = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789ABCD";
const ROUTER_TITLE: &str = "Restart your router to fix most connection problems";
const DM: &str = "500000000000000001";
const SUPPORT: &str = "600000000000000001";

async fn start(backend: &Backend, fake: &FakeDiscord, knowledge: bool, extra: &str) -> Server {
    let mut opts = Options::new(backend);
    opts.knowledge = knowledge;
    opts.extra_toml = format!(
        "[discord.dc]\ntoken = \"{TOKEN}\"\napi_url = \"{}\"\n{extra}\n",
        fake.url
    );
    let server = Server::start(opts).await;
    fake.wait_identified().await;
    server
}

fn content(m: &Value) -> &str {
    m["content"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_direct_message_gets_the_knowledge_answer_over_rest() {
    let fake = FakeDiscord::start().await;
    let server = start(&Backend::Sqlite, &fake, true, "").await;
    fake.send_dm(
        "510000000000000001",
        DM,
        "400000000000000001",
        "How do I restart my router?",
    );
    let posted = fake.wait_posted(DM, 1).await;
    assert!(content(&posted[0]).contains(ROUTER_TITLE), "{}", posted[0]);
    assert!(content(&posted[0]).contains("Nimbus Hub"), "{}", posted[0]);
    assert!(content(&posted[0]).chars().count() <= 2000);
    // Our own message coming back over the gateway is not taken for the customer's.
    let echo = support::discord_fake::message_json(
        "510000000000000099",
        DM,
        serde_json::json!({"id": support::discord_fake::BOT_USER_ID, "username": "support-bot", "discriminator": "0", "bot": true}),
        "How do I restart my router?",
        None,
    );
    fake.dispatch("MESSAGE_CREATE", echo);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fake.posted(DM).len(), 1, "nothing else was sent");
    let list = server.admin_get("/api/v1/channels/dc").await;
    assert_eq!(list["kind"], "discord");
    assert_eq!(list["inbound"], "gateway");
    assert!(!list.to_string().contains("GhIjKl"), "{list}");
    assert!(
        !server.log().contains("GhIjKl"),
        "the token never reaches the log"
    );
}

#[tokio::test]
async fn suggestions_come_as_buttons_and_a_press_is_acknowledged_and_handled() {
    let fake = FakeDiscord::start().await;
    let _server = start(&Backend::Sqlite, &fake, true, "").await;
    fake.send_dm(
        "510000000000000002",
        DM,
        "400000000000000001",
        "problem with the router",
    );
    let posted = fake.wait_posted(DM, 1).await;
    assert!(
        content(&posted[0]).contains("Did you mean"),
        "{}",
        posted[0]
    );
    let buttons: Vec<Value> = posted[0]["components"]
        .as_array()
        .unwrap_or_else(|| panic!("buttons: {}", posted[0]))
        .iter()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(buttons.len() >= 2, "{buttons:?}");
    let button = buttons
        .iter()
        .find(|b| b["label"] == ROUTER_TITLE)
        .unwrap_or_else(|| panic!("a button for the router article: {buttons:?}"));
    let custom_id = button["custom_id"].as_str().expect("custom id");

    fake.press_button("520000000000000001", DM, "400000000000000001", custom_id);
    let calls = fake
        .wait_until("the interaction callback", |calls| {
            calls
                .iter()
                .any(|c| c.path.starts_with("/interactions/520000000000000001/"))
        })
        .await;
    let ack = calls
        .iter()
        .find(|c| c.path.starts_with("/interactions/"))
        .expect("callback");
    assert_eq!(
        ack.body["type"], 6,
        "acknowledged without a message: {:?}",
        ack.body
    );
    let posted = fake.wait_posted(DM, 2).await;
    assert!(
        content(&posted[1]).starts_with(ROUTER_TITLE),
        "{}",
        posted[1]
    );
}

#[tokio::test]
async fn each_support_channel_conversation_gets_its_own_thread() {
    for backend in backends().await {
        let fake = FakeDiscord::start().await;
        let _server = start(
            &backend,
            &fake,
            false,
            &format!("support_channel_id = {SUPPORT}"),
        )
        .await;
        fake.send_guild(
            "530000000000000001",
            SUPPORT,
            "400000000000000002",
            "my bill is wrong",
        );
        let calls = fake
            .wait_until("a thread", |calls| {
                calls.iter().any(|c| c.path.ends_with("/threads"))
            })
            .await;
        let thread_call = calls
            .iter()
            .find(|c| c.path.ends_with("/threads"))
            .expect("thread");
        assert_eq!(
            thread_call.path,
            format!("/channels/{SUPPORT}/messages/530000000000000001/threads")
        );
        assert_eq!(thread_call.body["name"], "Support: bob");
        // The fake numbers what it creates; the reply goes into the new thread, not the channel.
        let thread_id = fake
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/messages") && c.status == 200)
            .map(|c| c.path.split('/').nth(2).unwrap_or("").to_string())
            .next();
        let thread_id = match thread_id {
            Some(t) => t,
            None => {
                fake.wait_until("a reply", |calls| {
                    calls
                        .iter()
                        .any(|c| c.path.ends_with("/messages") && c.status == 200)
                })
                .await;
                fake.calls()
                    .iter()
                    .find(|c| c.path.ends_with("/messages") && c.status == 200)
                    .and_then(|c| c.path.split('/').nth(2).map(str::to_string))
                    .expect("reply path")
            }
        };
        assert_ne!(thread_id, SUPPORT);
        let first = fake.wait_posted(&thread_id, 1).await;
        assert!(
            content(&first[0]).starts_with("Hello!"),
            "{backend:?}: {}",
            first[0]
        );

        // The customer goes on in the thread: same conversation (no second greeting, no new thread).
        fake.send_guild(
            "530000000000000002",
            &thread_id,
            "400000000000000002",
            "still wrong",
        );
        let both = fake.wait_posted(&thread_id, 2).await;
        assert!(!content(&both[1]).starts_with("Hello!"), "{}", both[1]);
        // A message elsewhere in the guild is none of the bot's business.
        fake.send_guild(
            "530000000000000003",
            "600000000000000999",
            "400000000000000003",
            "hi",
        );
        tokio::time::sleep(Duration::from_millis(800)).await;
        let threads = fake
            .calls()
            .iter()
            .filter(|c| c.path.ends_with("/threads"))
            .count();
        assert_eq!(threads, 1);
        assert!(fake.posted("600000000000000999").is_empty());
        assert!(
            fake.posted(SUPPORT).is_empty(),
            "nothing posted in the channel itself"
        );
    }
}

#[tokio::test]
async fn a_rate_limited_reply_is_retried_and_arrives_once() {
    let fake = FakeDiscord::start().await;
    let _server = start(&Backend::Sqlite, &fake, false, "").await;
    fake.rate_limit_next_message();
    fake.send_dm("540000000000000001", DM, "400000000000000001", "hello");
    let posted = fake.wait_posted(DM, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let attempts = fake.calls_to("POST", &format!("/channels/{DM}/messages"));
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!((attempts[0].status, attempts[1].status), (429, 200));
    assert!(attempts[1].at - attempts[0].at >= Duration::from_millis(950));
    assert_eq!(fake.posted(DM).len(), 1);
    assert!(content(&posted[0]).starts_with("Hello!"));
}

#[tokio::test]
async fn a_request_for_a_person_reaches_an_agent_whose_reply_arrives_as_a_channel_message() {
    let fake = FakeDiscord::start().await;
    let server = start(&Backend::Sqlite, &fake, true, "").await;
    server.add_agent("anna@example.com", "Anna", "", 3).await;
    let anna = server.login("anna@example.com").await;

    fake.send_dm(
        "510000000000000301",
        DM,
        "400000000000000301",
        "I want to talk to a real person, not a bot",
    );
    let posted = fake.wait_posted(DM, 2).await;
    assert!(
        content(&posted[0]).contains("passing your conversation"),
        "{}",
        posted[0]
    );
    assert!(
        content(&posted[1]).contains("Anna has joined"),
        "{}",
        posted[1]
    );
    let (_, mine) = anna.get("/api/v1/conversations?view=mine").await;
    let conversation = &mine["conversations"][0];
    assert_eq!(conversation["channel_kind"], "discord");
    let id = conversation["id"].as_str().expect("id");
    let (code, body) = anna
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            serde_json::json!({ "text": "Hi, Anna here. Let me check your line." }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let posted = fake.wait_posted(DM, 3).await;
    assert_eq!(
        content(&posted[2]),
        "Hi, Anna here. Let me check your line."
    );
}
