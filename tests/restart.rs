//! Crash safety: a gateway killed with SIGKILL mid-conversation loses nothing it acknowledged and
//! delivers what was still pending once it is back.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{backends, webhook_body, Chat, Options, Receiver, ReceiverMode, Server};
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn a_killed_gateway_keeps_every_acknowledged_message_and_delivers_pending_replies() {
    for backend in backends().await {
        // The receiver is down until after the restart, so replies pile up in the outbox.
        let port = free_port();
        let mut opts = Options::new(&backend);
        opts.crm_outbound_url = Some(format!("http://127.0.0.1:{port}/hook"));
        opts.max_attempts = 1000;
        let mut server = Server::start(opts).await;

        // 20 webhook messages from 4 contacts, sent concurrently; and 5 widget messages.
        let sends = (0..20).map(|i| {
            let body = webhook_body(
                &format!("contact-{}", i % 4),
                &format!("wh-{i}"),
                &format!("question {i}"),
            );
            let server = &server;
            async move {
                let resp = server.post_webhook(&body).await;
                let status = resp.status();
                let v: Value = resp.json().await.expect("json");
                assert_eq!(status, 202, "{v}");
                (body, v)
            }
        });
        let webhook_acks: Vec<(Vec<u8>, Value)> = futures_util::future::join_all(sends).await;
        let token = server.new_session().await;
        let mut chat = Chat::connect(&server, &token, 0).await;
        let mut widget_acks = HashMap::new();
        for i in 0..5 {
            let ack = chat
                .say_and_ack(&format!("w{i}"), &format!("widget question {i}"))
                .await;
            widget_acks.insert(format!("w{i}"), ack["seq"].as_i64().expect("seq"));
        }
        server.kill().await;

        let receiver = Receiver::start_at(
            format!("127.0.0.1:{port}").parse().expect("addr"),
            ReceiverMode::Accept,
        )
        .await;
        server.restart().await;

        // Every acknowledged webhook message is still there: a resend is a duplicate with the same seq.
        for (body, ack) in &webhook_acks {
            let again: Value = server.post_webhook(body).await.json().await.expect("json");
            assert_eq!(again["duplicate"], true, "{backend:?}: {again}");
            assert_eq!(
                (&again["seq"], &again["conversation_id"]),
                (&ack["seq"], &ack["conversation_id"])
            );
        }
        // Every acknowledged widget message is replayed with its seq, and each gets its bot reply.
        let mut chat = Chat::connect(&server, &token, 0).await;
        let mut seen = HashMap::new();
        let mut bot_replies = 0;
        while bot_replies < 5 {
            let f = chat.next().await;
            if f["type"] != "message" {
                continue;
            }
            if f["author"] == "customer" {
                seen.insert(
                    f["client_id"].as_str().expect("client_id").to_string(),
                    f["seq"].as_i64().expect("seq"),
                );
            } else if f["author"] == "bot" {
                bot_replies += 1;
            }
        }
        assert_eq!(seen, widget_acks);

        // Each of the 20 webhook messages got exactly one bot reply, all delivered after the
        // restart (at least once; de-duplicated on delivery_id, never two replies to one message).
        let got = receiver.wait_accepted(20).await;
        let ids: BTreeSet<&str> = got
            .iter()
            .map(|v| v["delivery_id"].as_str().expect("id"))
            .collect();
        let replies: BTreeSet<(String, i64)> = got
            .iter()
            .map(|v| {
                (
                    v["conversation_id"].as_str().expect("conv").to_string(),
                    v["seq"].as_i64().expect("seq"),
                )
            })
            .collect();
        assert_eq!(ids.len(), 20, "{got:#?}");
        assert_eq!(replies.len(), 20);
        server
            .wait_deliveries("?status=pending", |l| l.is_empty())
            .await;
        let crm = |l: &[Value]| l.iter().filter(|d| d["channel"] == "crm").count();
        let delivered = server
            .wait_deliveries("?status=delivered", |l| crm(l) == 20)
            .await;
        // The widget's replies have no outbox rows: the reconnected widget read them from the
        // transcript above.
        assert_eq!(
            delivered.len() - crm(&delivered),
            0,
            "no outbox rows for the widget: {delivered:#?}"
        );
    }
}
