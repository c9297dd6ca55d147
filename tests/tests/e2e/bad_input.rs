//! Bad input over real HTTP and WebSocket: every mistake gets the right status and the spec's
//! error shape, and none of them crashes the server or changes stored data.

use std::time::{Duration, Instant};

use fanfare_tests::Server;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Asserts `got` is an error answer with `status`, the spec's shape, and (when given) `code`.
#[track_caller]
fn assert_error(case: &str, got: &(u16, Value), status: u16, code: Option<&str>) {
    let (st, body) = got;
    assert_eq!(*st, status, "{case}: status (body {body})");
    assert_error_shape(case, body);
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{case}: code (body {body})");
    }
}

/// Asserts `body` is `{"error": {"code": "<non-empty>", "message": "<non-empty>"}}` without a
/// stack trace or source location in it.
#[track_caller]
fn assert_error_shape(case: &str, body: &Value) {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("{case}: body is not a JSON object: {body}"));
    assert_eq!(obj.len(), 1, "{case}: only `error` at the top level: {body}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{case}: error.code is a non-empty string: {body}");
    assert!(
        !message.is_empty(),
        "{case}: error.message is a non-empty string: {body}"
    );
    for leak in ["panicked", "backtrace", ".rs:", "RUST_BACKTRACE"] {
        assert!(
            !message.contains(leak),
            "{case}: message leaks internals ({leak}): {body}"
        );
    }
}

/// A JSON document of about `size` bytes: `{"<field>": "xxxx…"}`.
fn big_json(field: &str, size: usize) -> Vec<u8> {
    json!({ field: "x".repeat(size) }).to_string().into_bytes()
}

#[tokio::test]
async fn bad_http_input_is_rejected_and_changes_nothing() {
    let s = Server::start().await;
    let alice = s.token("alice").await;
    let t = Some(alice.as_str());

    // Data that must survive the barrage untouched.
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            t,
            Some(json!({"id": "g1", "name": "Group one"})),
        )
        .await;
    assert_eq!(st, 201);
    for text in ["first", "second"] {
        let (st, _) = s
            .call(Method::POST, "/v1/groups/g1/messages", t, Some(json!({ "text": text })))
            .await;
        assert_eq!(st, 201);
    }
    let group_before = s.call(Method::GET, "/v1/groups/g1", t, None).await;
    let messages_before = s.call(Method::GET, "/v1/groups/g1/messages", t, None).await;
    let members_before = s.call(Method::GET, "/v1/groups/g1/members", t, None).await;
    assert_eq!(group_before.0, 200);
    assert_eq!(messages_before.1["messages"].as_array().map(Vec::len), Some(2));
    assert_eq!(members_before.0, 200);

    // --- Malformed bodies -------------------------------------------------------------------
    let json_ct = "application/json";
    let cases: &[(&str, &str, &[u8])] = &[
        ("truncated JSON", "/v1/groups", br#"{"name":"#),
        ("not JSON at all", "/v1/groups", b"hello"),
        ("empty body", "/v1/groups", b""),
        ("truncated JSON (message)", "/v1/groups/g1/messages", br#"{"text":"#),
    ];
    for (case, path, body) in cases {
        let got = s.raw(Method::POST, path, t, json_ct, body.to_vec()).await;
        assert_error(case, &got, 400, None);
    }
    for (case, path, body) in [
        ("name is a number", "/v1/groups", json!({"name": 5})),
        ("name is null", "/v1/groups", json!({"name": null})),
        ("body is an array", "/v1/groups", json!([{"name": "x"}])),
        ("unknown field", "/v1/groups", json!({"name": "x", "bogus": 1})),
        ("missing name", "/v1/groups", json!({})),
        ("text is an array", "/v1/groups/g1/messages", json!({"text": []})),
        ("text is a number", "/v1/groups/g1/messages", json!({"text": 7})),
        (
            "unknown message field",
            "/v1/groups/g1/messages",
            json!({"text": "hi", "bogus": 1}),
        ),
        ("missing text", "/v1/groups/g1/messages", json!({})),
    ] {
        let got = s.call(Method::POST, path, t, Some(body)).await;
        assert_error(case, &got, 400, None);
    }
    let got = s
        .call(Method::PATCH, "/v1/groups/g1", t, Some(json!({"name": 5})))
        .await;
    assert_error("PATCH name is a number", &got, 400, None);
    let got = s
        .call(
            Method::PUT,
            "/v1/groups/g1/members/bob",
            t,
            Some(json!({"role": "king"})),
        )
        .await;
    assert_error("unknown role", &got, 400, None);

    // --- Size and content type --------------------------------------------------------------
    const MIB: usize = 1 << 20;
    let got = s
        .raw(Method::POST, "/v1/groups", t, json_ct, big_json("name", MIB))
        .await;
    assert_error("1 MiB group body", &got, 413, None);
    let got = s
        .raw(
            Method::POST,
            "/v1/groups/g1/messages",
            t,
            json_ct,
            big_json("text", MIB),
        )
        .await;
    assert_error("1 MiB message body", &got, 413, None);
    let got = s
        .raw(Method::POST, "/v1/groups", t, "text/plain", br#"{"name":"x"}"#.to_vec())
        .await;
    assert_error("text/plain group body", &got, 415, None);
    let got = s
        .raw(
            Method::POST,
            "/v1/groups/g1/messages",
            t,
            "text/plain",
            br#"{"text":"x"}"#.to_vec(),
        )
        .await;
    assert_error("text/plain message body", &got, 415, None);

    // --- Invalid ids ------------------------------------------------------------------------
    let long = "a".repeat(65);
    for bad in [
        "%2E%2E%2Fx",
        long.as_str(),
        "%C3%A9",
        "a%20b",
        "a%2Fb",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    ] {
        for (method, path, body) in [
            (Method::GET, format!("/v1/groups/{bad}"), None),
            (Method::PATCH, format!("/v1/groups/{bad}"), Some(json!({"name": "n"}))),
            (Method::DELETE, format!("/v1/groups/{bad}"), None),
            (Method::GET, format!("/v1/groups/{bad}/members"), None),
            (Method::GET, format!("/v1/groups/{bad}/messages"), None),
            (
                Method::POST,
                format!("/v1/groups/{bad}/messages"),
                Some(json!({"text": "hi"})),
            ),
            (Method::PUT, format!("/v1/groups/g1/members/{bad}"), Some(json!({}))),
            (Method::DELETE, format!("/v1/groups/g1/members/{bad}"), None),
        ] {
            let case = format!("{method} {path}");
            let got = s.call(method, &path, t, body).await;
            assert_error(&case, &got, 400, Some("invalid_id"));
        }
    }
    // The longest valid id is not an id error.
    let got = s
        .call(Method::GET, &format!("/v1/groups/{}", "a".repeat(64)), t, None)
        .await;
    assert_error("64-character id", &got, 404, None);
    for (case, body) in [
        ("id ../x in body", json!({"id": "../x", "name": "n"})),
        ("empty id in body", json!({"id": "", "name": "n"})),
        ("65-character id in body", json!({"id": long, "name": "n"})),
        ("non-ASCII id in body", json!({"id": "é", "name": "n"})),
        ("id with a space in body", json!({"id": "a b", "name": "n"})),
    ] {
        let got = s.call(Method::POST, "/v1/groups", t, Some(body)).await;
        // An id in a body is checked like one in a path.
        assert_error(case, &got, 400, Some("invalid_id"));
        let message = got.1["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("invalid group id"),
            "{case}: message names the id: {message}"
        );
    }
    // An empty path segment may route elsewhere; it must still be a 4xx in the error shape.
    for (method, path) in [
        (Method::GET, "/v1/groups//members"),
        (Method::GET, "/v1/groups//messages"),
        (Method::PUT, "/v1/groups/g1/members/"),
    ] {
        let (st, body) = s.call(method.clone(), path, t, Some(json!({}))).await;
        assert!((400..500).contains(&st), "{method} {path}: 4xx, got {st} {body}");
        assert_error_shape(&format!("{method} {path}"), &body);
    }

    // --- Paging -----------------------------------------------------------------------------
    for q in [
        "limit=100000000",
        "limit=-1",
        "limit=abc",
        "limit=0",
        "limit=",
        "limit=1.5",
        "after=abc",
        "after=-1",
        "after=",
        "bogus=1",
    ] {
        let got = s
            .call(Method::GET, &format!("/v1/groups/g1/messages?{q}"), t, None)
            .await;
        assert_error(q, &got, 400, None);
    }
    let (st, body) = s.call(Method::GET, "/v1/groups/g1/messages?limit=1", t, None).await;
    assert_eq!(st, 200, "limit=1 is valid: {body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(1));

    // --- Settings ---------------------------------------------------------------------------
    for (case, settings) in [
        ("bitrate 0", json!({"media": {"max_bitrate_kbps": 0}})),
        ("bitrate negative", json!({"media": {"max_bitrate_kbps": -5}})),
        (
            "bitrate above 100 Mbps",
            json!({"media": {"max_bitrate_kbps": 100_001}}),
        ),
        (
            "bitrate beyond u32",
            json!({"media": {"max_bitrate_kbps": 100_000_000_000u64}}),
        ),
        ("resolution 8k", json!({"media": {"max_resolution": "8k"}})),
        ("unknown member permission", json!({"members": {"can_fly": true}})),
        ("unknown guest permission", json!({"guests": {"can_fly": true}})),
        ("permission not a bool", json!({"members": {"can_send": "yes"}})),
        ("unknown media field", json!({"media": {"smell": true}})),
        ("unknown settings field", json!({"bogus": 1})),
    ] {
        let got = s
            .call(
                Method::POST,
                "/v1/groups",
                t,
                Some(json!({"name": "s", "settings": settings.clone()})),
            )
            .await;
        assert_error(&format!("create: {case}"), &got, 400, None);
        let got = s
            .call(Method::PATCH, "/v1/groups/g1", t, Some(json!({ "settings": settings })))
            .await;
        assert_error(&format!("patch: {case}"), &got, 400, None);
    }
    for (case, body) in [
        ("member bitrate 0", json!({"media": {"max_bitrate_kbps": 0}})),
        ("member resolution 8k", json!({"media": {"max_resolution": "8k"}})),
        ("member unknown permission", json!({"permissions": {"can_fly": true}})),
    ] {
        let got = s.call(Method::PUT, "/v1/groups/g1/members/bob", t, Some(body)).await;
        assert_error(case, &got, 400, None);
    }

    // --- Message text -----------------------------------------------------------------------
    for (case, text) in [
        ("empty text", String::new()),
        ("spaces only", "     ".to_string()),
        ("whitespace only", " \n\t ".to_string()),
        ("4001 characters", "x".repeat(4001)),
        ("4001 non-ASCII characters", "é".repeat(4001)),
    ] {
        let got = s
            .call(Method::POST, "/v1/groups/g1/messages", t, Some(json!({ "text": text })))
            .await;
        assert_error(case, &got, 400, None);
    }

    // --- Unknown routes and methods ---------------------------------------------------------
    for path in ["/v1/nope", "/v1/groups/g1/nope", "/nope/at/all"] {
        let got = s.call(Method::GET, path, t, None).await;
        assert_error(path, &got, 404, None);
    }
    let (st, body) = s.call(Method::DELETE, "/v1/tokens", Some(&s.admin), None).await;
    assert!(st == 404 || st == 405, "DELETE /v1/tokens: 404 or 405, got {st} {body}");
    assert_error_shape("DELETE /v1/tokens", &body);

    // --- Still serving, nothing changed -----------------------------------------------------
    let (st, body) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    assert_eq!(s.call(Method::GET, "/v1/groups/g1", t, None).await, group_before);
    assert_eq!(
        s.call(Method::GET, "/v1/groups/g1/messages", t, None).await,
        messages_before
    );
    assert_eq!(
        s.call(Method::GET, "/v1/groups/g1/members", t, None).await,
        members_before
    );
    let (st, all) = s.call(Method::GET, "/v1/groups", Some(&s.admin), None).await;
    assert_eq!(st, 200);
    let ids: Vec<&str> = all["groups"]
        .as_array()
        .expect("groups list")
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(ids, ["g1"], "no rejected request created a group");

    // The limits are where they should be: 4000 characters (not bytes) is accepted.
    for text in ["x".repeat(4000), "é".repeat(4000)] {
        let (st, body) = s
            .call(Method::POST, "/v1/groups/g1/messages", t, Some(json!({ "text": text })))
            .await;
        assert_eq!(st, 201, "4000 characters are accepted: {}", body["error"]);
    }
}

/// Polls `/metrics` until `fanfare_connections` is `want` (up to 3 s).
async fn wait_connections(s: &Server, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let n = s.metric("fanfare_connections").await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "fanfare_connections is {n}, expected {want} within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends `ping` with `req` and expects the matching `pong` as the next message.
async fn ping(ws: &mut fanfare_tests::Ws, req: &str) {
    ws.send(json!({"type": "ping", "req": req})).await;
    let v = ws.next(Duration::from_secs(5)).await.expect("a reply to ping");
    assert_eq!(
        (v["type"].as_str(), v["req"].as_str()),
        (Some("pong"), Some(req)),
        "{v}"
    );
}

#[tokio::test]
async fn bad_websocket_input_is_answered_and_contained() {
    let s = Server::start().await;
    let alice = s.token("alice").await;
    let mut ws = s.ws(&alice).await;
    let mut other = s.ws(&alice).await;

    // Unreadable messages get an `invalid_message` error and the socket stays usable.
    for (case, frame) in [
        ("not JSON", WsMessage::text("this is not json")),
        ("truncated JSON", WsMessage::text(r#"{"type":"#)),
        ("unknown type", WsMessage::text(r#"{"type":"dance","req":"d"}"#)),
        ("no type", WsMessage::text(r#"{"req":"x"}"#)),
        ("JSON array", WsMessage::text("[1,2,3]")),
        ("unknown field", WsMessage::text(r#"{"type":"ping","bogus":1}"#)),
        ("bad group id", WsMessage::text(r#"{"type":"join","group":"../x"}"#)),
        ("binary frame", WsMessage::binary(vec![0u8, 159, 146, 150])),
    ] {
        ws.send_raw(frame).await.expect("send frame");
        let v = ws.next(Duration::from_secs(5)).await.expect("a reply");
        assert_eq!(
            (v["type"].as_str(), v["code"].as_str()),
            (Some("error"), Some("invalid_message")),
            "{case}: {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {v}");
        ping(&mut ws, case).await;
    }

    // A frame over 64 KiB closes that socket only.
    let _ = ws.send_raw(WsMessage::text("x".repeat(64 * 1024 + 1))).await;
    assert!(
        ws.closed_within(Duration::from_secs(5)).await,
        "oversize frame closes the socket"
    );
    drop(ws);
    ping(&mut other, "still-here").await;
    let mut fresh = s.ws(&alice).await;
    ping(&mut fresh, "fresh").await;
    assert_eq!(s.call(Method::GET, "/healthz", None, None).await.0, 200);
    drop(fresh);
    drop(other);
    wait_connections(&s, 0.0).await;

    // A flood: 1,000 requests as fast as the client can send them, read concurrently.
    let url = format!("{}/v1/rtc?token={alice}", s.base.replace("http://", "ws://"));
    let (stream, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connects");
    let (mut tx, mut rx) = stream.split();
    const FLOOD: usize = 1000;
    let reader = tokio::spawn(async move {
        let (mut pongs, mut limited, mut other) = (0usize, 0usize, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(10);
        while pongs + limited < FLOOD {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, rx.next()).await else {
                break;
            };
            let WsMessage::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("server sends JSON");
            match (v["type"].as_str(), v["code"].as_str()) {
                (Some("hello"), _) => {}
                (Some("pong"), _) => pongs += 1,
                (Some("error"), Some("rate_limited")) => limited += 1,
                _ => other.push(v),
            }
        }
        (pongs, limited, other, rx)
    });
    let started = Instant::now();
    for i in 0..FLOOD {
        tx.send(WsMessage::text(
            json!({"type": "ping", "req": i.to_string()}).to_string(),
        ))
        .await
        .expect("flood send");
    }
    let sent_in = started.elapsed();
    let (pongs, limited, other_msgs, rx) = reader.await.expect("reader task");
    assert!(
        sent_in < Duration::from_secs(1),
        "the flood was sent within 1 s ({sent_in:?})"
    );
    assert!(
        other_msgs.is_empty(),
        "only pongs and rate_limited errors: {other_msgs:?}"
    );
    assert_eq!(
        pongs + limited,
        FLOOD,
        "every request is answered ({pongs} pongs, {limited} limited)"
    );
    assert!(limited > 0, "some requests are rate limited");
    assert!(pongs > 0, "a burst is allowed");

    // The limited connection recovers once the bucket refills.
    let mut ws = tx.reunite(rx).expect("halves of one stream");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        ws.send(WsMessage::text(r#"{"type":"ping","req":"after"}"#))
            .await
            .expect("send");
        let v = loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(WsMessage::Text(t)))) => break serde_json::from_str::<Value>(t.as_str()).expect("JSON"),
                Ok(Some(Ok(_))) => continue,
                other => panic!("socket ended after the flood: {other:?}"),
            }
        };
        if v["type"] == "pong" {
            break;
        }
        assert_eq!(v["code"], "rate_limited", "{v}");
        assert!(Instant::now() < deadline, "still rate limited 3 s after the flood");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ws.close(None).await.expect("close");
    drop(ws);

    // The server still serves, and every connection is accounted for once closed.
    assert_eq!(s.call(Method::GET, "/healthz", None, None).await.0, 200);
    wait_connections(&s, 0.0).await;
}
