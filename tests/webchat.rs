//! The web chat channel over a real WebSocket, on SQLite and PostgreSQL.

mod common;

use common::{backends, Chat, Options, Server};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn seqs(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_i64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn widget_round_trip_gets_an_acked_message_and_a_bot_reply() {
    for backend in backends().await {
        let server = Server::start(Options::new(&backend)).await;
        let token = server.new_session().await;
        let mut chat = Chat::connect(&server, &token, 0).await;
        assert_eq!(chat.welcome["last_seq"], 0, "{backend:?}");
        // A second tab of the same visitor follows the conversation live.
        let mut other_tab = Chat::connect(&server, &token, 0).await;

        let ack = chat
            .say_and_ack("c-1", "Hello, my internet is not working")
            .await;
        assert_eq!(
            (ack["seq"].as_i64(), ack["duplicate"].as_bool()),
            (Some(1), Some(false))
        );
        let (own, _) = chat.until(|f| f["type"] == "message").await;
        assert_eq!(
            (
                own["seq"].as_i64(),
                own["author"].as_str(),
                own["client_id"].as_str()
            ),
            (Some(1), Some("customer"), Some("c-1"))
        );
        let (reply, _) = chat
            .until(|f| f["type"] == "message" && f["author"] == "bot")
            .await;
        assert_eq!(reply["seq"], 2);
        assert_eq!(reply["author"], "bot");
        let text = reply["text"].as_str().expect("text");
        assert!(
            text.starts_with("Hello!") && text.contains("can't answer"),
            "{text}"
        );
        let (seen1, _) = other_tab.until(|f| f["type"] == "message").await;
        let (seen2, _) = other_tab.until(|f| f["type"] == "message").await;
        assert_eq!(
            (seen1["seq"].as_i64(), seen1["text"].as_str()),
            (Some(1), Some("Hello, my internet is not working"))
        );
        assert_eq!(
            (seen2["seq"].as_i64(), seen2["author"].as_str()),
            (Some(2), Some("bot"))
        );

        // The same client_id again: the original seq, flagged, and no second bot turn.
        let again = chat
            .say_and_ack("c-1", "Hello, my internet is not working")
            .await;
        assert_eq!(
            (again["seq"].as_i64(), again["duplicate"].as_bool()),
            (Some(1), Some(true))
        );
        assert!(
            chat.try_next(Duration::from_millis(700)).await.is_none(),
            "no reply to a duplicate"
        );
        chat.close().await;
    }
}

#[tokio::test]
async fn a_reconnect_replays_exactly_the_missed_messages() {
    for backend in backends().await {
        let server = Server::start(Options::new(&backend)).await;
        let token = server.new_session().await;
        let mut chat = Chat::connect(&server, &token, 0).await;
        for (i, text) in ["first", "second", "third"].iter().enumerate() {
            chat.say_and_ack(&format!("m{i}"), text).await;
            chat.until(|f| f["type"] == "message" && f["author"] == "bot")
                .await;
        }
        chat.close().await;

        // The client had shown up to seq 2; it must get 3..=6, once each, in order.
        let mut again = Chat::connect(&server, &token, 2).await;
        assert_eq!(again.welcome["last_seq"], 6, "{backend:?}");
        let mut replayed = Vec::new();
        while let Some(f) = again.try_next(Duration::from_millis(700)).await {
            replayed.push(f);
        }
        assert_eq!(seqs(&replayed), vec![3, 4, 5, 6], "{replayed:#?}");
        assert_eq!(replayed[0]["author"], "customer");
        assert_eq!(replayed[0]["text"], "second");
        assert_eq!(replayed[0]["client_id"], "m1");
        assert_eq!(replayed[1]["author"], "bot");

        // Live streaming continues after the replay.
        let ack = again.say_and_ack("m3", "fourth").await;
        assert_eq!(ack["seq"], 7);
        let (reply, _) = again
            .until(|f| f["type"] == "message" && f["author"] == "bot")
            .await;
        assert_eq!(reply["seq"], 8);

        // A reader who saw everything gets nothing replayed.
        let mut full = Chat::connect(&server, &token, 8).await;
        assert!(full.try_next(Duration::from_millis(500)).await.is_none());
        // A fresh page (last_seq 0) rebuilds the whole transcript.
        let mut fresh = Chat::connect(&server, &token, 0).await;
        let mut all = Vec::new();
        while let Some(f) = fresh.try_next(Duration::from_millis(700)).await {
            all.push(f);
        }
        assert_eq!(seqs(&all), (1..=8).collect::<Vec<_>>());

        // The widget's replies have no outbox row (it reads what it missed from the store): a
        // bot reply published while its socket was closing, or after, comes on the next connect.
        let mut leaving = Chat::connect(&server, &token, 8).await;
        assert_eq!(leaving.say_and_ack("m4", "fifth").await["seq"], 9);
        leaving.close().await;
        let mut back = Chat::connect(&server, &token, 9).await;
        let (reply, _) = back
            .until(|f| f["type"] == "message" && f["author"] == "bot")
            .await;
        assert_eq!(reply["seq"], 10, "{backend:?}");
        let outbox = server.admin_get("/api/v1/deliveries").await;
        assert_eq!(
            outbox["deliveries"].as_array().map(Vec::len),
            Some(0),
            "no outbox rows for the widget's bot replies: {outbox:#}"
        );
    }
}

#[tokio::test]
async fn protocol_errors_are_named_and_nothing_bad_is_stored() {
    for backend in backends().await {
        let server = Server::start(Options::new(&backend)).await;
        let token = server.new_session().await;
        let mut chat = Chat::connect(&server, &token, 0).await;

        chat.send_raw(Message::text("{not json")).await;
        let e = chat.next().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str(), e["fatal"].as_bool()),
            (Some("error"), Some("bad_frame"), Some(false))
        );

        chat.send_raw(Message::binary(vec![0xff, 0x00])).await;
        assert_eq!(chat.next().await["code"], "bad_frame");

        chat.say("big", &"x".repeat(4097)).await;
        let e = chat.next().await;
        assert_eq!(
            (e["code"].as_str(), e["client_id"].as_str()),
            (Some("too_large"), Some("big"))
        );
        assert!(
            e["message"].as_str().expect("message").contains("4097"),
            "{e}"
        );

        chat.say("blank", "   ").await;
        assert_eq!(chat.next().await["code"], "empty_message");

        chat.send(json!({"type": "ping"})).await;
        assert_eq!(chat.next().await["type"], "pong");

        // Nothing of the above was stored: the next message is seq 1.
        assert_eq!(chat.say_and_ack("ok", "a real question").await["seq"], 1);
        chat.close().await;

        // A forged token is refused and the socket closed.
        let forged = token.replace("v1.", "v1.f");
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("connect");
        use futures_util::{SinkExt, StreamExt};
        ws.send(Message::text(
            json!({"type":"hello","token":forged,"last_seq":0}).to_string(),
        ))
        .await
        .expect("send");
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("expected an error frame")
        };
        let e: Value = serde_json::from_str(&t).expect("json");
        assert_eq!(
            (e["code"].as_str(), e["fatal"].as_bool()),
            (Some("bad_token"), Some(true))
        );

        // A first frame that is not hello is refused.
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("connect");
        ws.send(Message::text(
            json!({"type":"message","client_id":"x","text":"hi"}).to_string(),
        ))
        .await
        .expect("send");
        let Some(Ok(Message::Text(t))) = ws.next().await else {
            panic!("expected an error frame")
        };
        assert!(t.contains("hello_required"), "{t}");
    }
}

#[tokio::test]
async fn a_flood_is_rate_limited_with_a_retry_hint_and_refused_messages_are_not_stored() {
    for backend in backends().await {
        let mut opts = Options::new(&backend);
        opts.extra_toml = String::new();
        let server = Server::start(opts).await;
        let token = server.new_session().await;
        let mut chat = Chat::connect(&server, &token, 0).await;
        for i in 0..30 {
            chat.say(&format!("f{i}"), "flood").await;
        }
        let mut acked = Vec::new();
        let mut limited = Vec::new();
        while acked.len() + limited.len() < 30 {
            let f = chat.next().await;
            match f["type"].as_str() {
                Some("ack") => acked.push(f["seq"].as_i64().expect("seq")),
                Some("error") => {
                    assert_eq!(f["code"], "rate_limited", "{f}");
                    assert!(f["retry_after_ms"].as_u64().expect("retry hint") > 0);
                    limited.push(f["client_id"].as_str().expect("client_id").to_string());
                }
                _ => {}
            }
        }
        // Burst of 10 by default; a few more may pass as tokens refill at 5/s.
        assert!((10..=13).contains(&acked.len()), "acked {acked:?}");
        assert_eq!(acked.len() + limited.len(), 30);
        // Acked messages got consecutive customer seqs (bot replies interleave): none were lost.
        let mut sorted = acked.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, acked, "acks come in order");
        // Resending a limited message later stores it.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let ack = chat.say_and_ack(&limited[0], "flood").await;
        assert_eq!(ack["duplicate"], false);
        assert!(server.log().contains("rate limit"), "the refusal is logged");
    }
}

#[tokio::test]
async fn the_session_api_refuses_bad_bodies_clearly() {
    let server = Server::start(Options::new(&common::Backend::Sqlite)).await;
    let client = reqwest::Client::new();
    // The widget runs on other sites: the browser's preflight is answered for any origin.
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            server.url("/api/v1/widget/sessions"),
        )
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let resp = client
        .post(server.url("/api/v1/widget/sessions"))
        .body("{\"name\":")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "malformed_json");
    let resp = client
        .post(server.url("/api/v1/widget/sessions"))
        .body("{\"nmae\":\"x\"}")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("nmae"),
        "{v}"
    );
    // The locale picks the greeting language until the customer writes.
    let v: Value = client
        .post(server.url("/api/v1/widget/sessions"))
        .json(&json!({"locale":"ru-RU"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let mut chat = Chat::connect(&server, v["token"].as_str().expect("token"), 0).await;
    chat.say_and_ack("1", "ok").await;
    let (reply, _) = chat
        .until(|f| f["type"] == "message" && f["author"] == "bot")
        .await;
    assert!(
        reply["text"]
            .as_str()
            .expect("text")
            .starts_with("Здравствуйте"),
        "{reply}"
    );
}
