//! Durability: everything acknowledged survives SIGKILL, nothing is duplicated; SIGTERM shuts
//! down cleanly.

use fanfare_tests::Server;
use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn groups_members_and_a_thousand_messages_survive_sigkill() {
    let s = Server::start().await;
    let owner = s.token("owner").await;
    for g in ["alpha", "beta", "gamma"] {
        let (st, _) = s
            .call(
                Method::POST,
                "/v1/groups",
                Some(&owner),
                Some(json!({"id": g, "name": g.to_uppercase(), "settings": {"guests": {"can_send": false}}})),
            )
            .await;
        assert_eq!(st, 201);
        for m in ["m1", "m2"] {
            let body = json!({"permissions": {"can_publish": false}, "media": {"max_resolution": "hd"}});
            let (st, _) = s
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{g}/members/{m}"),
                    Some(&owner),
                    Some(body),
                )
                .await;
            assert_eq!(st, 201);
        }
    }
    // 1,000 messages, eight in flight at a time.
    let sent: Vec<Value> = stream::iter(0..1000)
        .map(|i| {
            let (s, owner) = (&s, &owner);
            async move {
                let (st, m) = s
                    .call(
                        Method::POST,
                        "/v1/groups/alpha/messages",
                        Some(owner),
                        Some(json!({"text": format!("msg {i}")})),
                    )
                    .await;
                assert_eq!(st, 201, "{m}");
                m
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(sent.len(), 1000);

    let s = s.restart_after_kill().await;
    let owner = s.token("owner").await;
    let (st, groups) = s.call(Method::GET, "/v1/groups", Some(&owner), None).await;
    assert_eq!(st, 200);
    let ids: Vec<_> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["alpha", "beta", "gamma"]);
    assert_eq!(groups["groups"][0]["settings"]["guests"]["can_send"], false);
    let (st, members) = s.call(Method::GET, "/v1/groups/beta/members", Some(&owner), None).await;
    assert_eq!(st, 200);
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "owner, m1, m2");
    let m1 = members.iter().find(|m| m["user"] == "m1").unwrap();
    assert_eq!(
        (&m1["permissions"]["can_publish"], &m1["media"]["max_resolution"]),
        (&json!(false), &json!("hd"))
    );

    // Page through the history 300 at a time: every message once, ids increasing.
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/groups/alpha/messages?limit=300&after={a}"),
            None => "/v1/groups/alpha/messages?limit=300".into(),
        };
        let (st, page) = s.call(Method::GET, &path, Some(&owner), None).await;
        assert_eq!(st, 200);
        let msgs = page["messages"].as_array().unwrap().clone();
        if msgs.is_empty() {
            assert!(page["next_after"].is_null());
            break;
        }
        after = page["next_after"].as_str().map(str::to_owned);
        got.extend(msgs);
    }
    assert_eq!(got.len(), 1000, "no message lost or duplicated");
    let ids: Vec<u64> = got.iter().map(|m| m["id"].as_str().unwrap().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
    let mut texts: Vec<_> = got.iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    let mut want: Vec<_> = sent.iter().map(|m| m["text"].as_str().unwrap().to_string()).collect();
    texts.sort();
    want.sort();
    assert_eq!(texts, want);
    // A new message after restart gets a fresh id, greater than every old one.
    let (st, m) = s
        .call(
            Method::POST,
            "/v1/groups/alpha/messages",
            Some(&owner),
            Some(json!({"text": "after"})),
        )
        .await;
    assert_eq!(st, 201);
    assert!(m["id"].as_str().unwrap().parse::<u64>().unwrap() > *ids.last().unwrap());
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_data_reopens() {
    let mut s = Server::start().await;
    let owner = s.token("owner").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&owner),
            Some(json!({"id": "g", "name": "G"})),
        )
        .await;
    assert_eq!(st, 201);
    let status = s.stop_with(libc::SIGTERM).expect("server was running");
    assert!(status.success(), "graceful exit, got {status:?}; log:\n{}", s.log());
    assert!(s.log().contains("flushing storage"));
    let s = s.restart_after_kill().await;
    let (st, g) = s.call(Method::GET, "/v1/groups/g", Some(&s.admin), None).await;
    assert_eq!((st, g["name"].as_str()), (200, Some("G")));
}
