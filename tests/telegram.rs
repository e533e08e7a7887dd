//! The Telegram channel end to end: the real `frontdesk` binary with its real teloxide client,
//! against a fake Bot API on 127.0.0.1 (`support/telegram_fake.rs`) that records every call.

mod common;
mod support {
    pub mod telegram_fake;
}

use std::time::Duration;

use common::{backends, Backend, Options, Server};
use serde_json::{json, Value};
use support::telegram_fake::{message, FakeTelegram};

const TOKEN: &str = "111111:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const TOKEN_B: &str = "222222:BBHdqTcvCH1vGWJxfSeofSAs0K5PALDsbw";
const ROUTER_TITLE: &str = "Restart your router to fix most connection problems";

fn bot_toml(name: &str, token: &str, fake: &FakeTelegram, extra: &str) -> String {
    format!(
        "[telegram.{name}]\ntoken = \"{token}\"\napi_url = \"{}\"\npoll_timeout_secs = 1\n{extra}\n",
        fake.url
    )
}

async fn start(backend: &Backend, knowledge: bool, toml: String) -> Server {
    let mut opts = Options::new(backend);
    opts.knowledge = knowledge;
    opts.extra_toml = toml;
    Server::start(opts).await
}

fn text(body: &Value) -> &str {
    body["text"].as_str().unwrap_or_default()
}

/// Customer messages of the server's database (text and metadata), oldest first.
async fn stored_customer_messages(server: &Server, backend: &Backend) -> Vec<(String, Value)> {
    use sqlx::Row;
    let sql =
        "SELECT text, metadata FROM messages WHERE author = 'customer' ORDER BY created_at, seq";
    let rows: Vec<(String, String)> = match backend {
        Backend::Sqlite => {
            let url = format!(
                "sqlite://{}",
                server.dir.path().join("frontdesk.db").display()
            );
            let pool = sqlx::SqlitePool::connect(&url).await.expect("open sqlite");
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect("query");
            rows.iter()
                .map(|r| (r.get("text"), r.get("metadata")))
                .collect()
        }
        Backend::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("open postgres");
            let rows = sqlx::query(sql).fetch_all(&pool).await.expect("query");
            rows.iter()
                .map(|r| (r.get("text"), r.get("metadata")))
                .collect()
        }
    };
    rows.into_iter()
        .map(|(t, m)| (t, serde_json::from_str(&m).expect("metadata json")))
        .collect()
}

#[tokio::test]
async fn start_greets_in_the_users_language_and_a_question_gets_the_knowledge_answer() {
    let fake = FakeTelegram::start().await;
    let _server = start(&Backend::Sqlite, true, bot_toml("tg", TOKEN, &fake, "")).await;

    let mut start = message(42, 1, json!({"text": "/start"}));
    start["message"]["from"]["language_code"] = json!("ru");
    fake.push_update(TOKEN, start);
    let greeting = fake.wait_sent(TOKEN, 1).await;
    assert_eq!(greeting[0]["chat_id"], 42);
    assert!(
        text(&greeting[0]).starts_with("Здравствуйте!"),
        "greeted in Russian: {}",
        greeting[0]
    );

    fake.push_text(TOKEN, 42, 2, "How do I restart my router?");
    let sent = fake.wait_sent(TOKEN, 2).await;
    let answer = text(&sent[1]);
    assert!(answer.starts_with(ROUTER_TITLE), "{answer}");
    assert!(
        answer.contains("Nimbus Hub"),
        "the article's body: {answer}"
    );
    assert_eq!(sent[1]["chat_id"], 42);
    assert!(
        sent[1].get("reply_markup").is_none(),
        "an answer has no buttons: {}",
        sent[1]
    );
    // Every update was confirmed to Telegram.
    fake.wait_calls(TOKEN, "getUpdates", 3, true).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fake.pending(TOKEN), 0);
    assert_eq!(fake.sent(TOKEN).len(), 2, "nothing else was sent");
}

#[tokio::test]
async fn suggestions_come_as_inline_buttons_and_a_press_is_answered_and_handled() {
    let fake = FakeTelegram::start().await;
    let server = start(&Backend::Sqlite, true, bot_toml("tg", TOKEN, &fake, "")).await;

    fake.push_text(TOKEN, 7, 1, "problem with the router");
    let sent = fake.wait_sent(TOKEN, 1).await;
    assert!(text(&sent[0]).contains("Did you mean"), "{}", sent[0]);
    let rows = sent[0]["reply_markup"]["inline_keyboard"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("an inline keyboard: {}", sent[0]));
    assert!(rows.len() >= 2, "{rows:?}");
    let button = rows
        .iter()
        .map(|row| &row[0])
        .find(|b| b["text"] == ROUTER_TITLE)
        .unwrap_or_else(|| panic!("a button for the router article: {rows:?}"))
        .clone();
    let data = button["callback_data"].as_str().expect("callback data");
    assert!(data.len() <= 64, "Telegram's limit: {data}");

    fake.push_callback(TOKEN, 7, "cbq-1", 1001, data);
    let answered = fake.wait_calls(TOKEN, "answerCallbackQuery", 1, true).await;
    assert_eq!(answered[0]["callback_query_id"], "cbq-1");
    let sent = fake.wait_sent(TOKEN, 2).await;
    assert!(
        text(&sent[1]).starts_with(ROUTER_TITLE),
        "the pressed article: {}",
        sent[1]
    );

    // The press is stored as the customer's message with the button's payload.
    let stored = stored_customer_messages(&server, &Backend::Sqlite).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1].0, ROUTER_TITLE);
    assert_eq!(stored[1].1["quick_reply"]["token"], data);
    assert_eq!(stored[1].1["telegram"]["callback_query_id"], "cbq-1");

    // A press on data we never sent is answered and ignored.
    fake.push_callback(TOKEN, 7, "cbq-2", 1001, "q:999:0");
    fake.wait_calls(TOKEN, "answerCallbackQuery", 2, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.sent(TOKEN).len(), 2);
    assert!(server.log().contains("unknown quick reply"), "logged");
}

#[tokio::test]
async fn a_429_is_waited_out_and_each_reply_arrives_once_in_order() {
    for backend in backends().await {
        let fake = FakeTelegram::start().await;
        let _server = start(&backend, false, bot_toml("tg", TOKEN, &fake, "")).await;
        fake.fail_once(
            "sendMessage",
            429,
            "Too Many Requests: retry after 1",
            Some(1),
        );

        fake.push_text(TOKEN, 5, 1, "hello");
        fake.push_text(TOKEN, 5, 2, "anyone there?");
        let sent = fake.wait_sent(TOKEN, 2).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let calls = fake.calls_of(TOKEN, "sendMessage");
        assert_eq!(
            calls.len(),
            3,
            "one refused attempt and two deliveries: {calls:#?}"
        );
        assert!(!calls[0].ok && calls[1].ok && calls[2].ok);
        let waited = calls[1].at - calls[0].at;
        assert!(
            waited >= Duration::from_millis(950),
            "retry_after honoured: {waited:?}"
        );
        // The greeting answers the first message: it was not overtaken by the second reply.
        assert!(
            text(&sent[0]).starts_with("Hello!"),
            "{backend:?}: {sent:?}"
        );
        assert!(!text(&sent[1]).starts_with("Hello!"), "{sent:?}");
        assert_eq!(fake.sent(TOKEN).len(), 2, "each reply exactly once");
    }
}

#[tokio::test]
async fn a_restart_during_long_polling_processes_no_update_twice() {
    for backend in backends().await {
        let fake = FakeTelegram::start().await;
        let mut server = start(&backend, false, bot_toml("tg", TOKEN, &fake, "")).await;
        let first = fake.push_text(TOKEN, 9, 1, "first");
        fake.wait_sent(TOKEN, 1).await;
        // The reply is recorded as delivered. (Killed between sending and recording, it would be
        // sent again after the restart: delivery is at-least-once, and that is not what this test
        // is about.)
        server
            .wait_deliveries("?status=delivered", |l| l.len() == 1)
            .await;
        // Wait for the poll that follows the update (the gateway is now inside a long poll).
        fake.wait_calls(TOKEN, "getUpdates", 2, true).await;
        let polls_before = fake.calls_of(TOKEN, "getUpdates").len();

        server.kill().await;
        // As if Telegram had not seen the confirmation: the same update is offered again.
        let mut again = message(9, 1, json!({"text": "first"}));
        again["update_id"] = json!(first);
        fake.push_update(TOKEN, again);
        server.restart().await;

        let second = fake.push_text(TOKEN, 9, 2, "second");
        let sent = fake.wait_sent(TOKEN, 2).await;
        let polls = fake.calls_of(TOKEN, "getUpdates");
        let first_after_restart = &polls[polls_before].body;
        assert_eq!(
            first_after_restart["offset"].as_i64(),
            Some(first + 1),
            "{backend:?}: polling resumed after the saved offset"
        );
        assert!(second > first);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(fake.sent(TOKEN).len(), 2, "{:?}", fake.sent(TOKEN));
        assert!(
            !text(&sent[1]).starts_with("Hello!"),
            "the same conversation continued"
        );
        let stored = stored_customer_messages(&server, &backend).await;
        let texts: Vec<&str> = stored.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["first", "second"], "{backend:?}");
    }
}

#[tokio::test]
async fn a_malformed_update_is_logged_and_skipped_and_the_next_one_works() {
    let fake = FakeTelegram::start().await;
    let server = start(&Backend::Sqlite, false, bot_toml("tg", TOKEN, &fake, "")).await;
    fake.push_update(
        TOKEN,
        json!({"message": {"message_id": "not a number", "chat": 3}}),
    );
    fake.push_text(TOKEN, 3, 2, "are you there?");
    let sent = fake.wait_sent(TOKEN, 1).await;
    assert_eq!(sent[0]["chat_id"], 3);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fake.pending(TOKEN), 0, "both updates confirmed");
    assert!(
        server.log().contains("malformed Telegram update skipped"),
        "{}",
        server.log()
    );
    let stored = stored_customer_messages(&server, &Backend::Sqlite).await;
    assert_eq!(stored.len(), 1);
}

#[tokio::test]
async fn two_bots_attachments_edits_and_groups() {
    for backend in backends().await {
        let fake = FakeTelegram::start().await;
        let toml = bot_toml("tg-a", TOKEN, &fake, "") + &bot_toml("tg-b", TOKEN_B, &fake, "");
        let server = start(&backend, false, toml).await;

        // A group message to a bot without allow_groups is ignored.
        fake.push_update(
            TOKEN,
            json!({"message": {"message_id": 1, "date": 1_700_000_000, "text": "hi all",
                "chat": {"id": -100, "type": "group", "title": "Team"},
                "from": {"id": 5, "is_bot": false, "first_name": "Bob"}}}),
        );
        fake.push_update(
            TOKEN,
            message(
                11,
                2,
                json!({"caption": "the light is red", "photo": [
                {"file_id": "small-id", "file_unique_id": "s", "width": 90, "height": 60},
                {"file_id": "big-id", "file_unique_id": "b", "width": 1280, "height": 960}]}),
            ),
        );
        fake.push_update(
            TOKEN_B,
            message(
                12,
                1,
                json!({"document": {"file_id": "doc-id", "file_unique_id": "d",
                "file_name": "contract.pdf", "mime_type": "application/pdf"}}),
            ),
        );
        let a = fake.wait_sent(TOKEN, 1).await;
        let b = fake.wait_sent(TOKEN_B, 1).await;
        assert_eq!(
            (a[0]["chat_id"].as_i64(), b[0]["chat_id"].as_i64()),
            (Some(11), Some(12))
        );

        let mut edit = message(
            11,
            2,
            json!({"text": "the light is blinking red", "edit_date": 1_700_000_050}),
        );
        edit["edited_message"] = edit["message"].take();
        edit.as_object_mut().expect("object").remove("message");
        fake.push_update(TOKEN, edit);
        fake.wait_sent(TOKEN, 2).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            fake.sent(TOKEN).iter().all(|m| m["chat_id"] != -100),
            "no reply in the group"
        );

        let stored = stored_customer_messages(&server, &backend).await;
        assert_eq!(stored.len(), 3, "{backend:?}: {stored:#?}");
        let photo = stored
            .iter()
            .find(|(t, _)| t == "the light is red")
            .expect("photo message");
        assert_eq!(photo.1["attachments"][0]["type"], "photo");
        assert_eq!(photo.1["attachments"][0]["file_id"], "big-id");
        assert_eq!(photo.1["attachments"][0]["caption"], "the light is red");
        let doc = stored
            .iter()
            .find(|(t, _)| t == "[document]")
            .expect("document message");
        assert_eq!(doc.1["attachments"][0]["file_name"], "contract.pdf");
        let edited = stored
            .iter()
            .find(|(t, _)| t == "the light is blinking red")
            .expect("edit");
        assert_eq!(edited.1["edited_of"], "11:2");

        // The admin API lists both bots, never their tokens.
        let resp = server
            .admin(reqwest::Method::GET, "/api/v1/channels")
            .send()
            .await
            .expect("list");
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        assert!(!body.contains(TOKEN) && !body.contains("AAHdq"), "{body}");
        let v: Value = serde_json::from_str(&body).expect("json");
        let bots: Vec<(&str, &str)> = v["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .filter(|c| c["kind"] == "telegram")
            .map(|c| {
                (
                    c["name"].as_str().unwrap_or(""),
                    c["inbound"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(bots, [("tg-a", "polling"), ("tg-b", "polling")]);
        let anon = reqwest::get(server.url("/api/v1/channels"))
            .await
            .expect("get");
        assert_eq!(anon.status(), 401);
        assert!(
            !server.log().contains("AAHdq"),
            "the token never reaches the log"
        );
    }
}

#[tokio::test]
async fn webhook_mode_registers_the_url_and_checks_the_secret_token() {
    const SECRET: &str = "webhook-secret-0123456789";
    let fake = FakeTelegram::start().await;
    let extra = format!(
        "webhook_url = \"https://support.example.com/api/v1/telegram/tg/webhook\"\nsecret_token = \"{SECRET}\"\n"
    );
    let server = start(
        &Backend::Sqlite,
        false,
        bot_toml("tg", TOKEN, &fake, &extra),
    )
    .await;
    let registered = fake.wait_calls(TOKEN, "setWebhook", 1, true).await;
    let raw = registered[0].to_string();
    assert!(
        raw.contains("support.example.com/api/v1/telegram/tg/webhook") && raw.contains(SECRET),
        "{raw}"
    );
    assert!(
        fake.calls_of(TOKEN, "getUpdates").is_empty(),
        "no polling in webhook mode"
    );

    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 1_700_000_000,
        "chat": {"id": 77, "type": "private", "first_name": "Eve"},
        "from": {"id": 77, "is_bot": false, "first_name": "Eve"}, "text": "hello"}});
    let post = |secret: Option<&str>, body: Value| {
        let mut req = reqwest::Client::new()
            .post(server.url("/api/v1/telegram/tg/webhook"))
            .json(&body);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        req.send()
    };
    assert_eq!(
        post(None, update.clone()).await.expect("post").status(),
        401
    );
    assert_eq!(
        post(Some("wrong-secret-0123456789"), update.clone())
            .await
            .expect("post")
            .status(),
        401
    );
    assert_eq!(
        post(Some(SECRET), update.clone())
            .await
            .expect("post")
            .status(),
        200
    );
    // Telegram retrying the same update: stored once, answered once.
    assert_eq!(
        post(Some(SECRET), update).await.expect("post").status(),
        200
    );
    // A malformed update is acknowledged (so Telegram does not resend it forever) and skipped.
    assert_eq!(
        post(Some(SECRET), json!({"nonsense": true}))
            .await
            .expect("post")
            .status(),
        200
    );
    let sent = fake.wait_sent(TOKEN, 1).await;
    assert_eq!(sent[0]["chat_id"], 77);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(fake.sent(TOKEN).len(), 1);
    let other = reqwest::Client::new()
        .post(server.url("/api/v1/telegram/nope/webhook"))
        .json(&json!({}))
        .send()
        .await
        .expect("post");
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn a_request_for_a_person_reaches_an_agent_whose_reply_arrives_as_send_message() {
    let fake = FakeTelegram::start().await;
    let server = start(&Backend::Sqlite, true, bot_toml("tg", TOKEN, &fake, "")).await;
    server.add_agent("anna@example.com", "Anna", "", 3).await;
    let anna = server.login("anna@example.com").await;

    fake.push_text(TOKEN, 77, 1, "I want to talk to a real person, not a bot");
    // The bot says a person is coming, then that Anna joined.
    let sent = fake.wait_sent(TOKEN, 2).await;
    assert!(
        text(&sent[0]).contains("passing your conversation"),
        "{}",
        sent[0]
    );
    assert!(text(&sent[1]).contains("Anna has joined"), "{}", sent[1]);
    let (_, mine) = anna.get("/api/v1/conversations?view=mine").await;
    let conversation = &mine["conversations"][0];
    assert_eq!(conversation["channel_kind"], "telegram");
    let id = conversation["id"].as_str().expect("id");

    let (code, body) = anna
        .post(
            &format!("/api/v1/conversations/{id}/messages"),
            json!({ "text": "Hi, Anna here. Let me check your line." }),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let sent = fake.wait_sent(TOKEN, 3).await;
    assert_eq!(sent[2]["chat_id"], 77);
    assert_eq!(text(&sent[2]), "Hi, Anna here. Let me check your line.");
    // While Anna owns it the bot does not answer the customer.
    fake.push_text(TOKEN, 77, 2, "thanks, waiting");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.sent(TOKEN).len(), 3, "the bot stays silent");
}

#[tokio::test]
async fn a_bot_added_through_the_admin_api_starts_receiving_and_stops_when_removed() {
    let fake = FakeTelegram::start().await;
    let server = start(&Backend::Sqlite, false, String::new()).await;
    let resp = server
        .admin(reqwest::Method::POST, "/api/v1/channels")
        .json(&json!({
            "name": "tg-api", "kind": "telegram", "token": TOKEN,
            "api_url": fake.url, "poll_timeout_secs": 1
        }))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["inbound"], "polling");
    assert!(
        !v.to_string().contains(TOKEN),
        "the token is never returned: {v}"
    );

    fake.push_text(TOKEN, 55, 1, "hello there");
    let sent = fake.wait_sent(TOKEN, 1).await;
    assert_eq!(sent[0]["chat_id"], 55);

    let resp = server
        .admin(reqwest::Method::DELETE, "/api/v1/channels/tg-api")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    // No more polling: an update pushed now stays pending.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.push_text(TOKEN, 55, 2, "anyone?");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fake.pending(TOKEN), 1, "the removed bot no longer polls");
    assert_eq!(fake.sent(TOKEN).len(), 1);
    assert!(!server.log().contains(TOKEN), "the token is never logged");
}
