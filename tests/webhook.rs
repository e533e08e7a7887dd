//! The webhook channel: signed inbound messages, signed outbound deliveries from the outbox with
//! retries and dead letters, on SQLite and PostgreSQL.

mod common;

use common::{backends, webhook_body, Options, Receiver, ReceiverMode, Server, CRM_SECRET};
use serde_json::Value;

#[tokio::test]
async fn a_duplicate_webhook_message_is_stored_once_and_answered_with_its_original_seq() {
    for backend in backends().await {
        let receiver = Receiver::start(ReceiverMode::Accept).await;
        let mut opts = Options::new(&backend);
        opts.crm_outbound_url = Some(receiver.url.clone());
        let server = Server::start(opts).await;

        let body = webhook_body("cust-7", "msg-1", "Where is my order?");
        let first = server.post_webhook(&body).await;
        assert_eq!(first.status(), 202);
        let first: Value = first.json().await.expect("json");
        assert_eq!(
            (first["seq"].as_i64(), first["duplicate"].as_bool()),
            (Some(1), Some(false)),
            "{backend:?}"
        );
        for _ in 0..3 {
            let again = server.post_webhook(&body).await;
            assert_eq!(again.status(), 202);
            let again: Value = again.json().await.expect("json");
            assert_eq!(again["seq"], 1);
            assert_eq!(again["duplicate"], true);
            assert_eq!(again["conversation_id"], first["conversation_id"]);
        }
        // Exactly one bot reply went out, signed, to the contact's id.
        let got = receiver.wait_accepted(1).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(receiver.accepted().len(), 1);
        assert_eq!(got[0]["_signature_ok"], true);
        assert_eq!(got[0]["contact_id"], "cust-7");
        assert_eq!(got[0]["seq"], 2);
        assert_eq!(got[0]["author"], "bot");
        assert_eq!(got[0]["event"], "message.created");
        assert_eq!(got[0]["_delivery_header"], got[0]["delivery_id"]);
        // A second message continues the same conversation.
        let next: Value = server
            .post_webhook(&webhook_body("cust-7", "msg-2", "Hello?"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            (next["seq"].as_i64(), &next["conversation_id"]),
            (Some(3), &first["conversation_id"])
        );

        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("frontdesk_messages_in_total{channel=\"crm\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("frontdesk_messages_duplicate_total{channel=\"crm\"} 3"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_bad_or_stale_signature_is_refused_with_401_and_nothing_is_stored() {
    for backend in backends().await {
        let server = Server::start(Options::new(&backend)).await;
        let body = webhook_body("c", "m-1", "hello");
        let now = frontdesk_channels::now_ms() / 1000;

        let wrong = frontdesk_channels::signature::sign(b"not-the-secret", now, &body);
        let resp = server
            .post_webhook_raw("crm", &body, &now.to_string(), &wrong)
            .await;
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "bad_signature");

        let old = now - 3600;
        let stale = frontdesk_channels::signature::sign(CRM_SECRET.as_bytes(), old, &body);
        let resp = server
            .post_webhook_raw("crm", &body, &old.to_string(), &stale)
            .await;
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "stale_timestamp");
        // The message says how far off the timestamp is (a second may tick during the request).
        let message = v["error"]["message"].as_str().expect("msg");
        let off: u64 = message
            .strip_prefix("timestamp is ")
            .and_then(|m| m.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no offset in {message:?}"));
        assert!((3600..=3605).contains(&off), "{v}");

        let resp = server
            .post_webhook_raw("crm", &body, &now.to_string(), "")
            .await;
        assert_eq!(resp.status(), 401);

        // None of those was stored: the properly signed message is new, seq 1.
        let ok: Value = server.post_webhook(&body).await.json().await.expect("json");
        assert_eq!(
            (ok["seq"].as_i64(), ok["duplicate"].as_bool()),
            (Some(1), Some(false))
        );
        assert!(
            server.log().contains("signature does not match"),
            "the refusal is logged"
        );
    }
}

#[tokio::test]
async fn an_outbound_webhook_is_retried_until_a_flaky_receiver_accepts_it() {
    for backend in backends().await {
        let receiver = Receiver::start(ReceiverMode::FailFirst(3)).await;
        let mut opts = Options::new(&backend);
        opts.crm_outbound_url = Some(receiver.url.clone());
        let server = Server::start(opts).await;
        assert_eq!(
            server
                .post_webhook(&webhook_body("c", "m", "hi"))
                .await
                .status(),
            202
        );

        let got = receiver.wait_accepted(1).await;
        let attempts = receiver.attempts();
        assert_eq!(attempts.len(), 4, "3 failures then success: {attempts:#?}");
        assert!(
            attempts
                .iter()
                .all(|a| a["delivery_id"] == got[0]["delivery_id"]),
            "same delivery id on every attempt"
        );
        let list = server
            .wait_deliveries("?status=delivered", |l| l.len() == 1)
            .await;
        assert_eq!(list[0]["attempts"], 4, "{backend:?}");
        assert!(list[0]["last_error"].is_null());
    }
}

#[tokio::test]
async fn an_undeliverable_message_ends_dead_and_is_replayed_on_request() {
    for backend in backends().await {
        let receiver = Receiver::start(ReceiverMode::AlwaysFail).await;
        let mut opts = Options::new(&backend);
        opts.crm_outbound_url = Some(receiver.url.clone());
        opts.extra_toml = String::new();
        let server = Server::start(opts).await;
        assert_eq!(
            server
                .post_webhook(&webhook_body("c", "m", "hi"))
                .await
                .status(),
            202
        );

        let dead = server
            .wait_deliveries("?status=dead", |l| l.len() == 1)
            .await;
        assert_eq!(dead[0]["attempts"], 6, "max_attempts in the test config");
        let err = dead[0]["last_error"].as_str().expect("last_error");
        assert!(err.contains("503"), "{err}");
        assert_eq!(receiver.attempts().len(), 6);
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics
                .contains("frontdesk_delivery_failures_total{channel=\"crm\",outcome=\"dead\"} 1"),
            "{metrics}"
        );

        let client = reqwest::Client::new();
        let id = dead[0]["id"].as_str().expect("id");
        // Retrying needs the admin token.
        let resp = client
            .post(server.url(&format!("/api/v1/deliveries/{id}/retry")))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 401);

        receiver.set_mode(ReceiverMode::Accept);
        let resp = client
            .post(server.url(&format!("/api/v1/deliveries/{id}/retry")))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 202);
        receiver.wait_accepted(1).await;
        server
            .wait_deliveries("?status=delivered", |l| l.len() == 1)
            .await;
        // Retrying something that is not dead is a conflict.
        let resp = client
            .post(server.url(&format!("/api/v1/deliveries/{id}/retry")))
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 409);
    }
}

#[tokio::test]
async fn the_same_message_delivered_concurrently_is_stored_once() {
    for backend in backends().await {
        let server = Server::start(Options::new(&backend)).await;
        let body = webhook_body("racer", "same-id", "are you there?");
        let answers = futures_util::future::join_all((0..12).map(|_| async {
            let resp = server.post_webhook(&body).await;
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.expect("json")
        }))
        .await;
        let new: Vec<&Value> = answers.iter().filter(|a| a["duplicate"] == false).collect();
        assert_eq!(new.len(), 1, "{backend:?}: {answers:#?}");
        assert!(answers
            .iter()
            .all(|a| a["seq"] == 1 && a["conversation_id"] == new[0]["conversation_id"]));
    }
}

/// POSTs a signed webhook message to channel `name` with `secret`.
async fn post_signed(server: &Server, name: &str, secret: &str, body: &[u8]) -> reqwest::Response {
    let ts = frontdesk_channels::now_ms() / 1000;
    let sig = frontdesk_channels::signature::sign(secret.as_bytes(), ts, body);
    server
        .post_webhook_raw(name, body, &ts.to_string(), &sig)
        .await
}

#[tokio::test]
async fn channels_are_added_changed_and_removed_through_the_admin_api_and_survive_a_restart() {
    for backend in backends().await {
        let receiver = Receiver::start(ReceiverMode::Accept).await;
        let mut server = Server::start(Options::new(&backend)).await;
        const SECRET: &str = "api-made-secret-0123456789";
        let create = |body: Value| {
            server
                .admin(reqwest::Method::POST, "/api/v1/channels")
                .json(&body)
                .send()
        };
        // Refused: a short secret, an unknown kind, the name of a configured channel.
        for (body, status, code) in [
            (
                serde_json::json!({"name": "shop", "kind": "webhook", "secret": "short"}),
                400,
                "invalid_channel",
            ),
            (
                serde_json::json!({"name": "shop", "kind": "fax", "secret": SECRET}),
                400,
                "invalid_channel",
            ),
            (
                serde_json::json!({"name": "crm", "kind": "webhook", "secret": SECRET}),
                409,
                "configured_in_file",
            ),
        ] {
            let resp = create(body).await.expect("create");
            assert_eq!(resp.status(), status);
            let v: Value = resp.json().await.expect("json");
            assert_eq!(v["error"]["code"], code, "{v}");
        }
        let resp = create(serde_json::json!({
            "name": "shop", "kind": "webhook", "secret": SECRET, "outbound_url": receiver.url
        }))
        .await
        .expect("create");
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["source"], "api");
        assert!(!v.to_string().contains(SECRET), "no secret in answers: {v}");
        let resp = create(serde_json::json!({"name": "shop", "kind": "webhook", "secret": SECRET}))
            .await
            .expect("create again");
        assert_eq!(resp.status(), 409);

        // It works at once: a customer message gets the bot's reply through it.
        let resp = post_signed(&server, "shop", SECRET, &webhook_body("k1", "s-1", "hello")).await;
        assert_eq!(resp.status(), 202);
        let got = receiver.wait_accepted(1).await;
        assert_eq!(got[0]["contact_id"], "k1");

        // Changed: a new secret applies at once, the old one is refused.
        const NEW_SECRET: &str = "api-made-secret-abcdefghij";
        let resp = server
            .admin(reqwest::Method::PUT, "/api/v1/channels/shop")
            .json(&serde_json::json!({"kind": "webhook", "secret": NEW_SECRET, "outbound_url": receiver.url}))
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 200);
        let old = post_signed(&server, "shop", SECRET, &webhook_body("k1", "s-2", "again")).await;
        assert_eq!(old.status(), 401);
        let new = post_signed(
            &server,
            "shop",
            NEW_SECRET,
            &webhook_body("k1", "s-3", "again"),
        )
        .await;
        assert_eq!(new.status(), 202);
        let resp = server
            .admin(reqwest::Method::PUT, "/api/v1/channels/crm")
            .json(&serde_json::json!({"kind": "webhook", "secret": NEW_SECRET}))
            .send()
            .await
            .expect("put crm");
        assert_eq!(resp.status(), 409, "configured channels change in the file");

        // It survives a restart.
        server.restart().await;
        let list = server.admin_get("/api/v1/channels").await;
        let names: Vec<&str> = list["channels"]
            .as_array()
            .expect("channels")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["crm", "shop", "webchat"]);
        let again = post_signed(
            &server,
            "shop",
            NEW_SECRET,
            &webhook_body("k1", "s-4", "after restart"),
        )
        .await;
        assert_eq!(again.status(), 202);

        // Removed: messages to it are refused as an unknown channel, and it stays gone.
        let resp = server
            .admin(reqwest::Method::DELETE, "/api/v1/channels/shop")
            .send()
            .await
            .expect("delete");
        assert_eq!(resp.status(), 204);
        let gone = post_signed(
            &server,
            "shop",
            NEW_SECRET,
            &webhook_body("k1", "s-5", "gone?"),
        )
        .await;
        assert_eq!(gone.status(), 404);
        let v: Value = gone.json().await.expect("json");
        assert_eq!(v["error"]["code"], "unknown_channel");
        server.restart().await;
        let resp = server
            .admin(reqwest::Method::GET, "/api/v1/channels/shop")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 404);
    }
}
