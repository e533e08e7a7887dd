//! Human handoff end to end over real sockets: agents added with `frontdesk agent add`, logged in,
//! the queue assigning by skills, capacity and priority, a freed slot refilled at once, two agents
//! racing for one conversation, the bot silent while a person owns a conversation, agent replies
//! leaving through the customer's channel, resolve → rating → reopen, hand back, team visibility,
//! sessions and CSRF, and the console socket's gap-free resume. SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{
    backends, webhook_body, AgentClient, Backend, Options, Receiver, ReceiverMode, Server, TIMEOUT,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

const ASK_FOR_PERSON: &str = "I want to talk to a real person, not a bot";
const ANGRY_RU: &str =
    "Это возмутительно! Третий день нет интернета, мне надоело ваше враньё, буду жаловаться!";

async fn server(backend: &Backend, receiver: Option<&Receiver>) -> Server {
    let mut opts = Options::new(backend);
    opts.knowledge = true;
    opts.crm_outbound_url = receiver.map(|r| r.url.clone());
    Server::start(opts).await
}

/// A customer of the webhook channel `crm` says something; returns the conversation id.
async fn says(server: &Server, contact: &str, message_id: &str, text: &str) -> String {
    let resp = server
        .post_webhook(&webhook_body(contact, message_id, text))
        .await;
    assert_eq!(resp.status(), 202, "webhook message accepted");
    let v: Value = resp.json().await.expect("json");
    v["conversation_id"].as_str().expect("id").to_string()
}

/// Polls the conversation (admin view) until `pred` holds.
async fn wait_view(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let v = server
            .admin_get(&format!("/api/v1/conversations/{id}"))
            .await;
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened: {v:#}\nserver log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(v: &Value) -> &str {
    v["conversation"]["status"].as_str().unwrap_or("")
}

fn assignee(v: &Value) -> &str {
    v["conversation"]["assignee"]["id"].as_str().unwrap_or("")
}

fn messages<'a>(v: &'a Value, author: &str) -> Vec<&'a Value> {
    v["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["author"] == author)
        .collect()
}

fn has_text(v: &Value, author: &str, needle: &str) -> bool {
    messages(v, author)
        .iter()
        .any(|m| m["text"].as_str().is_some_and(|t| t.contains(needle)))
}

fn client_for<'a>(id: &str, agents: [&'a AgentClient; 2]) -> (&'a AgentClient, &'a AgentClient) {
    if agents[0].id() == id {
        (agents[0], agents[1])
    } else {
        assert_eq!(agents[1].id(), id, "assigned to one of the two agents");
        (agents[1], agents[0])
    }
}

#[tokio::test]
async fn handoff_queue_capacity_refill_reply_resolve_rating_reopen_and_hand_back() {
    for backend in backends().await {
        let receiver = Receiver::start(ReceiverMode::Accept).await;
        let server = server(&backend, Some(&receiver)).await;
        server
            .add_agent("anna@example.com", "Anna", "en,ru", 1)
            .await;
        server.add_agent("bob@example.com", "Bob", "en", 1).await;
        let anna = server.login("anna@example.com").await;
        let bob = server.login("bob@example.com").await;

        // Asked for a person: queued by the bot's rule, then assigned by the queue at once.
        let c1 = says(&server, "c1", "c1-1", ASK_FOR_PERSON).await;
        let v1 = wait_view(&server, &c1, "c1 assigned and the customer told", |v| {
            status(v) == "assigned" && has_text(v, "system", "has joined")
        })
        .await;
        let events = v1["events"].as_array().expect("events");
        let queued = events
            .iter()
            .find(|e| e["to_status"] == "queued")
            .expect("queued event");
        assert_eq!(queued["actor"], "bot");
        assert_eq!(queued["details"]["rule"], "asked_for_human");
        let assigned = events.last().expect("assigned event");
        assert_eq!(assigned["to_status"], "assigned");
        assert_eq!(assigned["actor"], "queue");
        let (owner1, owner2) = client_for(assignee(&v1), [&anna, &bob]);
        let owner1_name = owner1.agent["name"].as_str().expect("name");
        assert!(
            has_text(&v1, "system", &format!("{owner1_name} has joined")),
            "the customer is told who joined: {v1:#}"
        );

        // The second goes to the other agent (the only one with a free slot).
        let c2 = says(&server, "c2", "c2-1", ASK_FOR_PERSON).await;
        let v2 = wait_view(&server, &c2, "c2 assigned", |v| status(v) == "assigned").await;
        assert_eq!(assignee(&v2), owner2.id());

        // Nobody free for the third: it waits and the customer hears their place.
        let c3 = says(&server, "c3", "c3-1", ASK_FOR_PERSON).await;
        let v3 = wait_view(&server, &c3, "c3 told its place", |v| {
            has_text(v, "system", "number 1 in the queue")
        })
        .await;
        assert_eq!(status(&v3), "queued");
        let (code, waiting) = owner1.get("/api/v1/conversations?view=waiting").await;
        assert_eq!(code, 200);
        assert_eq!(waiting["conversations"][0]["id"], c3.as_str());

        // While a person owns c1 the bot stays silent.
        says(&server, "c1", "c1-2", "hello? is anyone there?").await;
        let v1 = wait_view(&server, &c1, "c1-2 handled", |v| {
            v["messages"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["annotations"]["owner"] == "human"))
        })
        .await;
        let bots_after = v1["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .skip_while(|m| m["text"] != "hello? is anyone there?")
            .filter(|m| m["author"] == "bot")
            .count();
        assert_eq!(bots_after, 0, "the bot must not answer: {v1:#}");

        // The owner's reply leaves through the customer's channel; anyone else's is refused.
        let (code, body) = owner1
            .post(
                &format!("/api/v1/conversations/{c1}/messages"),
                json!({ "text": "Hi, I'm here and I'll sort this out." }),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = owner2
            .post(
                &format!("/api/v1/conversations/{c1}/messages"),
                json!({ "text": "not mine" }),
            )
            .await;
        assert_eq!(code, 409, "{body}");
        let delivered = receiver.wait_accepted(1).await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let mut delivered = delivered;
        while !delivered
            .iter()
            .any(|d| d["text"] == "Hi, I'm here and I'll sort this out.")
        {
            assert!(tokio::time::Instant::now() < deadline, "{delivered:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            delivered = receiver.accepted();
        }
        let reply = delivered
            .iter()
            .find(|d| d["text"] == "Hi, I'm here and I'll sort this out.")
            .expect("delivered");
        assert_eq!(reply["author"], "agent");

        // Resolving frees owner1's slot: the waiting c3 is assigned to it at once.
        let (code, body) = owner1
            .post(&format!("/api/v1/conversations/{c1}/resolve"), json!({}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["conversation"]["status"], "resolved");
        let v3 = wait_view(&server, &c3, "c3 refilled", |v| status(v) == "assigned").await;
        assert_eq!(assignee(&v3), owner1.id());

        // The customer is asked for a rating with 1-5 buttons and answers 5.
        let v1 = wait_view(&server, &c1, "rating asked", |v| {
            messages(v, "system")
                .iter()
                .any(|m| m["quick_replies"].as_array().is_some_and(|q| q.len() == 5))
        })
        .await;
        assert_eq!(status(&v1), "resolved");
        says(&server, "c1", "c1-3", "5").await;
        let v1 = wait_view(&server, &c1, "rating stored", |v| {
            v["conversation"]["rating"] == 5
        })
        .await;
        assert_eq!(status(&v1), "resolved", "a rating does not reopen");
        assert!(has_text(&v1, "bot", "Thank you for your rating"));

        // Writing again reopens it to the bot, which answers.
        says(&server, "c1", "c1-4", "How do I top up my mobile data?").await;
        let v1 = wait_view(&server, &c1, "reopened and answered", |v| {
            status(v) == "bot"
                && v["messages"]
                    .as_array()
                    .and_then(|ms| ms.last())
                    .is_some_and(|m| m["author"] == "bot")
        })
        .await;
        assert!(v1["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["from_status"] == "resolved" && e["to_status"] == "bot"));

        // Hand back: the bot answers c2's next question.
        let (code, body) = owner2
            .post(&format!("/api/v1/conversations/{c2}/handback"), json!({}))
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["conversation"]["status"], "bot");
        says(&server, "c2", "c2-2", "How do I top up my mobile data?").await;
        wait_view(&server, &c2, "the bot answers after hand back", |v| {
            v["messages"]
                .as_array()
                .and_then(|ms| ms.last())
                .is_some_and(|m| m["author"] == "bot")
        })
        .await;
        // A hand-back from a conversation that is the bot's is refused by the state machine.
        let (code, body) = owner2
            .post(&format!("/api/v1/conversations/{c2}/handback"), json!({}))
            .await;
        assert_eq!(code, 409, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot hand back")));
    }
}

#[tokio::test]
async fn two_agents_racing_for_one_conversation_one_wins_and_priority_orders_the_queue() {
    for backend in backends().await {
        let server = server(&backend, None).await;
        server.add_agent("anna@example.com", "Anna", "", 5).await;
        server.add_agent("bob@example.com", "Bob", "", 5).await;
        let anna = server.login("anna@example.com").await;
        let bob = server.login("bob@example.com").await;
        // Away: nothing is assigned automatically, the conversations wait.
        anna.set_status("away").await;
        bob.set_status("away").await;

        let calm = says(&server, "p1", "p1-1", ASK_FOR_PERSON).await;
        wait_view(&server, &calm, "calm queued", |v| status(v) == "queued").await;
        let angry = says(&server, "p2", "p2-1", ANGRY_RU).await;
        let v = wait_view(&server, &angry, "angry queued", |v| status(v) == "queued").await;
        assert_eq!(v["conversation"]["priority"], 2);
        assert_eq!(
            v["conversation"]["emotion"]["label"], "angry",
            "the list shows the emotion: {v:#}"
        );
        let (_, waiting) = anna.get("/api/v1/conversations?view=waiting").await;
        let order: Vec<&str> = waiting["conversations"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|c| c["id"].as_str())
            .collect();
        assert_eq!(order, [angry.as_str(), calm.as_str()], "priority first");

        // Both take the calm one at the same moment: exactly one wins.
        for id in [&calm, &angry] {
            let path = format!("/api/v1/conversations/{id}/take");
            let (a, b) = tokio::join!(anna.post(&path, json!({})), bob.post(&path, json!({})));
            let mut codes = [a.0, b.0];
            codes.sort();
            assert_eq!(codes, [200, 409], "{a:?} {b:?}");
            let v = wait_view(&server, id, "taken", |v| status(v) == "assigned").await;
            let winner = if a.0 == 200 { &anna } else { &bob };
            assert_eq!(assignee(&v), winner.id());
            let takes = v["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter(|e| e["to_status"] == "assigned")
                .count();
            assert_eq!(takes, 1, "one assignment event: {v:#}");
        }
        // A transfer to the other agent moves it and says so.
        let v = server
            .admin_get(&format!("/api/v1/conversations/{calm}"))
            .await;
        let (owner, other) = client_for(assignee(&v), [&anna, &bob]);
        let (code, body) = owner
            .post(
                &format!("/api/v1/conversations/{calm}/transfer"),
                json!({ "agent_id": other.id() }),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["conversation"]["assignee"]["id"], other.id());
        let (code, _) = owner
            .post(
                &format!("/api/v1/conversations/{calm}/messages"),
                json!({ "text": "still mine?" }),
            )
            .await;
        assert_eq!(code, 409, "the previous owner may not reply any more");
    }
}

#[tokio::test]
async fn agents_need_a_session_and_see_only_their_teams() {
    let server = server(&Backend::Sqlite, None).await;
    server.add_agent("anna@example.com", "Anna", "", 3).await;
    server
        .add_agent("bob@example.com", "Bob", "en,billing", 3)
        .await;
    let http = reqwest::Client::new();

    // Wrong password and unknown e-mail get the same answer.
    for (email, password) in [
        ("anna@example.com", "wrong-password"),
        ("nobody@example.com", "agent-password-1"),
    ] {
        let resp = http
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["error"]["code"], "invalid_credentials");
    }
    // No session.
    let resp = http
        .get(server.url("/api/v1/conversations"))
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unauthenticated");

    // The console's cookie session: reads work, changes need the CSRF header.
    let resp = http
        .post(server.url("/api/v1/auth/login"))
        .json(&json!({ "email": "anna@example.com", "password": common::AGENT_PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200);
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("cookie")
        .to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie.split(';').next().expect("pair").to_string();
    let login: Value = resp.json().await.expect("json");
    let me = http
        .get(server.url("/api/v1/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("me");
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!(me["agent"]["email"], "anna@example.com");
    assert_eq!(me["csrf_token"], login["csrf_token"]);
    let no_csrf = http
        .put(server.url("/api/v1/agents/me/status"))
        .header("cookie", &cookie)
        .json(&json!({ "status": "away" }))
        .send()
        .await
        .expect("status");
    assert_eq!(no_csrf.status(), 403);
    let v: Value = no_csrf.json().await.expect("json");
    assert_eq!(v["error"]["code"], "csrf_failed");
    let with_csrf = http
        .put(server.url("/api/v1/agents/me/status"))
        .header("cookie", &cookie)
        .header("x-csrf-token", login["csrf_token"].as_str().expect("csrf"))
        .json(&json!({ "status": "away" }))
        .send()
        .await
        .expect("status");
    assert_eq!(with_csrf.status(), 200);

    let anna = server.login("anna@example.com").await;
    anna.set_status("away").await;
    let bob = server.login("bob@example.com").await;
    bob.set_status("away").await;

    // A conversation for the retention team: Bob (billing) may not open or take it.
    let c = says(&server, "t1", "t1-1", ASK_FOR_PERSON).await;
    wait_view(&server, &c, "queued", |v| status(v) == "queued").await;
    let resp = server
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{c}/transfer"),
        )
        .json(&json!({ "team": "retention" }))
        .send()
        .await
        .expect("transfer");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["conversation"]["team"], "retention");
    let (code, body) = bob.get(&format!("/api/v1/conversations/{c}")).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (code, _) = bob
        .post(&format!("/api/v1/conversations/{c}/take"), json!({}))
        .await;
    assert_eq!(code, 403);
    // A reply is refused for the reason that applies: another team's conversation, or none.
    let (code, body) = bob
        .post(
            &format!("/api/v1/conversations/{c}/messages"),
            json!({ "text": "hello" }),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (code, body) = bob
        .post(
            "/api/v1/conversations/no-such-conversation/messages",
            json!({ "text": "hello" }),
        )
        .await;
    assert_eq!(code, 404, "{body}");
    let (_, list) = bob.get("/api/v1/conversations?view=waiting").await;
    assert!(
        !list["conversations"]
            .as_array()
            .expect("list")
            .iter()
            .any(|x| x["id"] == c.as_str()),
        "Bob's list hides it: {list:#}"
    );
    let (code, _) = anna.get(&format!("/api/v1/conversations/{c}")).await;
    assert_eq!(code, 200, "Anna (every team) sees it");

    // Suggested answers are for the latest customer message, in the customer's language first.
    says(&server, "t1", "t1-2", "How do I restart my router?").await;
    wait_view(&server, &c, "second message stored", |v| {
        has_text(v, "customer", "restart my router")
    })
    .await;
    let (code, body) = anna
        .get(&format!("/api/v1/conversations/{c}/suggestions"))
        .await;
    assert_eq!(code, 200, "{body}");
    let first = &body["suggestions"][0];
    assert_eq!(
        first["title"], "Restart your router to fix most connection problems",
        "{body:#}"
    );
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.contains("Nimbus Hub")),
        "{first}"
    );
    let (code, body) = bob
        .post(
            &format!("/api/v1/conversations/{c}/transfer"),
            json!({ "team": "nonexistent" }),
        )
        .await;
    assert_eq!(code, 403, "{body}");

    // Logging out ends the session.
    let resp = anna
        .request(reqwest::Method::POST, "/api/v1/auth/logout")
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), 204);
    let (code, _) = anna.get("/api/v1/conversations").await;
    assert_eq!(code, 401);

    // The console itself is served by the gateway.
    let page = http
        .get(server.url("/console"))
        .send()
        .await
        .expect("console");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("console.js"), "{html}");
}

#[tokio::test]
async fn the_console_socket_streams_changes_and_resumes_without_gaps() {
    let server = server(&Backend::Sqlite, None).await;
    server.add_agent("anna@example.com", "Anna", "", 3).await;
    let anna = server.login("anna@example.com").await;
    let (mut console, welcome) = anna.console(0).await;
    assert_eq!(welcome["agent"]["email"], "anna@example.com");

    let c = says(&server, "w1", "w1-1", ASK_FOR_PERSON).await;
    let (frame, _) = console
        .until(|f| {
            f["type"] == "conversation"
                && f["conversation"]["id"] == c.as_str()
                && f["conversation"]["status"] == "assigned"
        })
        .await;
    assert_eq!(frame["conversation"]["assignee"]["id"], anna.id());
    assert_eq!(
        frame["conversation"]["handoff_reason"]
            .as_str()
            .map(|r| r.is_empty()),
        Some(false)
    );
    let last = frame["seq"].as_u64().expect("seq");
    drop(console);

    // While the console is away the customer writes.
    says(&server, "w1", "w1-2", "are you still there?").await;
    wait_view(&server, &c, "stored", |v| {
        has_text(v, "customer", "are you still there?")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back with the last seq it saw: the missed message is replayed, in order.
    let (mut console, _) = anna.console(last).await;
    let (frame, before) = console
        .until(|f| f["type"] == "message" && f["message"]["text"] == "are you still there?")
        .await;
    let mut seqs: Vec<u64> = before.iter().filter_map(|f| f["seq"].as_u64()).collect();
    seqs.push(frame["seq"].as_u64().expect("seq"));
    assert_eq!(
        seqs[0],
        last + 1,
        "replay starts right after the last seen frame"
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {seqs:?}"
    );
    assert_eq!(frame["conversation_id"], c.as_str());

    // A burst: twenty customers write at once. The frames the feed publishes together are
    // written to the socket together; each comes once, in order, none missing.
    let contacts: Vec<(String, String)> = (0..20)
        .map(|i| (format!("b{i}"), format!("b{i}-1")))
        .collect();
    let burst: Vec<String> = futures_util::future::join_all(
        contacts
            .iter()
            .map(|(contact, id)| says(&server, contact, id, "hello there")),
    )
    .await;
    let mut seqs = vec![seqs.last().copied().expect("seq")];
    let mut waiting: std::collections::HashSet<&str> = burst.iter().map(String::as_str).collect();
    while !waiting.is_empty() {
        let f = console.next().await;
        if let Some(seq) = f["seq"].as_u64() {
            seqs.push(seq);
        }
        if f["type"] == "message" && f["message"]["author"] == "customer" {
            waiting.remove(f["conversation_id"].as_str().unwrap_or_default());
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps, no repeats: {seqs:?}"
    );

    // From a seq the gateway never gave out (e.g. before a restart): reset.
    let (mut console, _) = anna.console(1_000_000).await;
    let reset = console.next().await;
    assert_eq!(reset["type"], "reset");
}

#[tokio::test]
async fn replies_over_the_console_socket_keep_their_order_and_are_refused_as_over_rest() {
    for backend in backends().await {
        let server = server(&backend, None).await;
        server.add_agent("anna@example.com", "Anna", "", 3).await;
        let anna = server.login("anna@example.com").await;
        let (mut console, _) = anna.console(0).await;
        let mine = says(&server, "s1", "s1-1", ASK_FOR_PERSON).await;
        wait_view(&server, &mine, "assigned to Anna", |v| {
            status(v) == "assigned" && assignee(v) == anna.id()
        })
        .await;
        // The bot's conversation: Anna has not taken it.
        let bots = says(&server, "s2", "s2-1", "hello").await;

        // Sent one after another without waiting: three replies to one conversation, one to a
        // conversation Anna does not own, one too long, one without a ref.
        let frames = [
            json!({ "type": "reply", "conversation_id": mine, "text": "first", "ref": "r1" }),
            json!({ "type": "reply", "conversation_id": mine, "text": "second", "ref": "r2" }),
            json!({ "type": "reply", "conversation_id": bots, "text": "not mine", "ref": "r3" }),
            json!({ "type": "reply", "conversation_id": mine, "text": "third", "ref": "r4" }),
            json!({ "type": "reply", "conversation_id": mine, "text": "x".repeat(4001), "ref": "r5" }),
            json!({ "type": "reply", "conversation_id": mine, "text": "no ref", "ref": "" }),
        ];
        for f in &frames {
            console
                .ws
                .send(tokio_tungstenite::tungstenite::Message::text(f.to_string()))
                .await
                .expect("reply frame");
        }
        let mut answers = std::collections::HashMap::new();
        let mut unnamed = Vec::new();
        // The message frames of Anna's conversation, as the console got them.
        let mut shown: Vec<Value> = Vec::new();
        while answers.len() < 5 || unnamed.is_empty() {
            let f = console.next().await;
            if f["type"] == "message" && f["conversation_id"] == mine.as_str() {
                shown.push(f["message"].clone());
            }
            match (f["type"].as_str(), f["ref"].as_str()) {
                (Some("sent" | "error"), Some(r)) => {
                    assert!(
                        answers.insert(r.to_string(), f.clone()).is_none(),
                        "one answer per reply: {f}"
                    );
                }
                (Some("error"), None) => unnamed.push(f),
                _ => {}
            }
        }
        let seq = |r: &str| -> i64 {
            let a = &answers[r];
            assert_eq!(a["type"], "sent", "{r} stored: {a}");
            assert_eq!(a["conversation_id"], mine.as_str());
            a["seq"].as_i64().expect("seq")
        };
        assert!(
            seq("r1") < seq("r2") && seq("r2") < seq("r4"),
            "replies to one conversation are stored in the order sent: {answers:?}"
        );
        for (r, code, http) in [("r3", "conflict", 409), ("r5", "text_too_long", 413)] {
            assert_eq!(answers[r]["type"], "error", "{r}: {}", answers[r]);
            assert_eq!(answers[r]["code"], code, "{r}: {}", answers[r]);
            assert_eq!(answers[r]["status"], http, "{r}: {}", answers[r]);
        }
        assert_eq!(unnamed[0]["code"], "bad_frame", "{}", unnamed[0]);

        // Stored in that order, with the sequence numbers the answers gave; nothing refused is.
        let v = wait_view(&server, &mine, "the three replies stored", |v| {
            messages(v, "agent").len() == 3
        })
        .await;
        let agent: Vec<(&str, i64)> = messages(&v, "agent")
            .iter()
            .map(|m| {
                (
                    m["text"].as_str().unwrap_or(""),
                    m["seq"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            agent,
            vec![
                ("first", seq("r1")),
                ("second", seq("r2")),
                ("third", seq("r4"))
            ]
        );
        let v = server
            .admin_get(&format!("/api/v1/conversations/{bots}"))
            .await;
        assert!(
            !has_text(&v, "agent", "not mine"),
            "a refused reply is not stored"
        );

        // The customer answers while Anna owns the conversation. The console gets each message
        // in order, and ends up showing each exactly as the transcript has it: the relay's
        // messages (the replies, and these answers) are sent as they were stored, not read back,
        // and a message the bot annotated after it was sent comes again with its annotations.
        says(&server, "s1", "s1-2", "thanks, that helps").await;
        says(&server, "s1", "s1-3", "one more thing").await;
        let v = wait_view(&server, &mine, "the customer's answers stored", |v| {
            has_text(v, "customer", "one more thing")
        })
        .await;
        let stored = v["messages"].as_array().expect("messages");
        let last = stored.last().expect("a message")["seq"].clone();
        while shown.last().map(|m| &m["seq"]) != Some(&last) {
            let f = console.next().await;
            if f["type"] == "message" && f["conversation_id"] == mine.as_str() {
                shown.push(f["message"].clone());
            }
        }
        let seqs: Vec<i64> = shown.iter().filter_map(|m| m["seq"].as_i64()).collect();
        let mut first_seen = seqs.clone();
        first_seen.retain({
            let mut seen = std::collections::HashSet::new();
            move |s| seen.insert(*s)
        });
        assert!(
            first_seen.windows(2).all(|w| w[1] == w[0] + 1),
            "each message in order: {seqs:?}"
        );
        let mut latest = std::collections::BTreeMap::new();
        for m in &shown {
            latest.insert(m["seq"].as_i64(), m);
        }
        for (seq, m) in latest {
            let same = stored.iter().find(|s| s["seq"].as_i64() == seq);
            assert_eq!(Some(m), same, "the console shows the message as stored");
        }
        assert!(
            shown
                .iter()
                .filter(|m| m["seq"].as_i64() >= Some(seq("r1")))
                .count()
                == stored
                    .iter()
                    .filter(|m| m["seq"].as_i64() >= Some(seq("r1")))
                    .count(),
            "the relay's messages are each sent once: {seqs:?}"
        );
        assert!(
            shown.iter().filter(|m| m["author"] == "agent").count() == 3
                && shown
                    .iter()
                    .any(|m| m["author"] == "customer" && m["text"] == "thanks, that helps"),
            "the replies and the customer's answers were shown: {shown:#?}"
        );

        // After a logout the socket takes no more replies: it says why and closes.
        let (code, _) = anna.post("/api/v1/auth/logout", json!({})).await;
        assert_eq!(code, 204);
        let late =
            json!({ "type": "reply", "conversation_id": mine, "text": "too late", "ref": "r6" });
        console
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(
                late.to_string(),
            ))
            .await
            .expect("late reply frame");
        let (refused, _) = console.until(|f| f["ref"] == "r6").await;
        assert_eq!(refused["code"], "unauthenticated", "{refused}");
        let closed = tokio::time::timeout(TIMEOUT, async {
            loop {
                match console.ws.next().await {
                    None
                    | Some(Err(_))
                    | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the socket closes after the session ended");
        let v = server
            .admin_get(&format!("/api/v1/conversations/{mine}"))
            .await;
        assert!(!has_text(&v, "agent", "too late"));
    }
}

#[tokio::test]
async fn an_idle_conversation_is_resolved_by_timeout_and_frees_the_agents_slot() {
    let mut opts = Options::new(&Backend::Sqlite);
    opts.knowledge = true;
    opts.extra_toml = "[handoff]\nidle_resolve_secs = 2\n".into();
    let server = Server::start(opts).await;
    server.add_agent("anna@example.com", "Anna", "", 1).await;
    let anna = server.login("anna@example.com").await;
    let c = says(&server, "i1", "i1-1", ASK_FOR_PERSON).await;
    wait_view(&server, &c, "assigned", |v| status(v) == "assigned").await;
    // Nobody writes: within the idle time plus one pass of the queue it is resolved.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let v = loop {
        let v = server
            .admin_get(&format!("/api/v1/conversations/{c}"))
            .await;
        if status(&v) == "resolved" {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not resolved: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last = v["events"]
        .as_array()
        .and_then(|e| e.last())
        .expect("event");
    assert_eq!(last["actor"], "timeout");
    assert_eq!(last["from_status"], "assigned");
    assert_eq!(last["reason"], "no message for 2 s");
    let (_, me) = anna.get("/api/v1/auth/me").await;
    assert_eq!(me["agent"]["load"], 0, "the slot is free again");
}

/// An agent's reply is delivered at once when nothing is pending, but never overtakes an earlier
/// message of the conversation that is still being retried: the customer's channel gets every
/// message in order, each once.
#[tokio::test]
async fn an_agent_reply_waits_behind_an_earlier_message_being_retried() {
    for backend in backends().await {
        // The bot's answer fails five times (about half a second of retries) before it gets through;
        // everything else is accepted at once.
        let receiver = Receiver::start(ReceiverMode::FailFirstBy("bot", 5)).await;
        // No knowledge base: the bot still answers (that it cannot answer yet), and the server
        // starts in a second.
        let mut opts = Options::new(&backend);
        opts.crm_outbound_url = Some(receiver.url.clone());
        let server = Server::start(opts).await;
        server.add_agent("ola@example.com", "Ola", "en", 5).await;
        let ola = server.login("ola@example.com").await;

        let id = says(&server, "c9", "c9-1", "hello").await;
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while receiver.attempts().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no delivery attempt"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(receiver.accepted().is_empty(), "the first attempt failed");

        // The agent takes the conversation from the bot and answers while the bot's message is
        // still in backoff.
        let (code, body) = ola
            .post(&format!("/api/v1/conversations/{id}/take"), json!({}))
            .await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = ola
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                json!({ "text": "Ola here, one moment." }),
            )
            .await;
        assert_eq!(code, 201, "{body}");

        let got = receiver.wait_accepted(3).await;
        let seqs: Vec<i64> = got.iter().filter_map(|m| m["seq"].as_i64()).collect();
        let authors: Vec<&str> = got.iter().filter_map(|m| m["author"].as_str()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{backend:?}: delivered out of order: {got:#?}"
        );
        assert_eq!(authors.first(), Some(&"bot"), "{got:#?}");
        assert_eq!(
            got.last().and_then(|m| m["text"].as_str()),
            Some("Ola here, one moment."),
            "{got:#?}"
        );

        // Nothing pending now: the next reply goes out directly, and is marked delivered.
        let (code, body) = ola
            .post(
                &format!("/api/v1/conversations/{id}/messages"),
                json!({ "text": "Done: your line is fixed." }),
            )
            .await;
        assert_eq!(code, 201, "{body}");
        let got = receiver.wait_accepted(got.len() + 1).await;
        assert_eq!(
            got.last().and_then(|m| m["text"].as_str()),
            Some("Done: your line is fixed.")
        );
        let list = server
            .wait_deliveries("?status=delivered", |l| l.len() == got.len())
            .await;
        assert!(list.iter().all(|d| d["status"] == "delivered"), "{list:#?}");
        assert_eq!(
            receiver.accepted().len(),
            got.len(),
            "each message delivered once"
        );
    }
}
