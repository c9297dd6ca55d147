//! The permission matrix: every endpoint of the foundation x every kind of caller, asserting the
//! exact status. Each caller row gets its own group, so destructive calls (removing a member,
//! deleting the group) run last and do not disturb other rows.

use fanfare_tests::Server;
use reqwest::Method;
use serde_json::{json, Value};

/// The seven permissions, in the spec's order, and their defaults for members.
const PERMS: [(&str, bool); 7] = [
    ("can_send", true),
    ("can_receive", true),
    ("can_publish", true),
    ("can_subscribe", true),
    ("can_list", true),
    ("can_playback", true),
    ("can_moderate", false),
];

#[derive(Clone, Debug)]
enum Caller {
    Admin,
    Owner,
    /// A member with one permission overridden (or none).
    Member(Option<(&'static str, bool)>),
    GuestOpen,
    GuestClosed,
    NoToken,
}

/// What the caller effectively holds in the row's group (spec: Permissions section).
fn effective(caller: &Caller) -> Option<Value> {
    let defaults = || {
        PERMS
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>()
    };
    match caller {
        Caller::Admin | Caller::Owner => Some(PERMS.iter().map(|(k, _)| (k.to_string(), json!(true))).collect()),
        Caller::Member(o) => {
            let mut p = defaults();
            if let Some((k, v)) = o {
                p.insert(k.to_string(), json!(v));
            }
            Some(Value::Object(p))
        }
        Caller::GuestOpen => Some(Value::Object(defaults())),
        Caller::GuestClosed | Caller::NoToken => None,
    }
}

fn has(caller: &Caller, perm: &str) -> bool {
    effective(caller).is_some_and(|p| p[perm] == json!(true))
}

fn is_member(c: &Caller) -> bool {
    matches!(c, Caller::Owner | Caller::Member(_))
}

/// Expected status of `endpoint` for `caller` (the contract, restated as a table).
fn expected(endpoint: &str, c: &Caller) -> u16 {
    if matches!(c, Caller::NoToken) {
        return 401;
    }
    let access = effective(c).is_some();
    let privileged = matches!(c, Caller::Admin | Caller::Owner);
    let allow = |ok: bool, code: u16| if ok { code } else { 403 };
    match endpoint {
        "POST /v1/tokens" => allow(matches!(c, Caller::Admin), 201),
        "POST /v1/groups" => 201,
        "GET /v1/groups" => 200,
        "GET group" => allow(access, 200),
        "PATCH group" => allow(has(c, "can_moderate"), 200),
        "GET members" => allow(is_member(c) || matches!(c, Caller::Admin), 200),
        "PUT member" => allow(has(c, "can_moderate"), 201),
        "PATCH member" => allow(has(c, "can_moderate"), 200),
        "POST message" => allow(has(c, "can_send"), 201),
        "GET messages" => allow(has(c, "can_receive"), 200),
        "WS join" => allow(access, 200),
        "DELETE member" => allow(has(c, "can_moderate"), 204),
        "DELETE group" => allow(privileged, 204),
        other => panic!("no expectation for {other}"),
    }
}

fn row_name(c: &Caller) -> String {
    match c {
        Caller::Member(None) => "member".into(),
        Caller::Member(Some((p, true))) => format!("member+{p}"),
        Caller::Member(Some((p, false))) => format!("member-{p}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[tokio::test]
async fn every_endpoint_by_every_caller() {
    let s = Server::start().await;
    let owner_token = s.token("owner").await;
    let mut callers = vec![
        Caller::Admin,
        Caller::Owner,
        Caller::Member(None),
        Caller::GuestOpen,
        Caller::GuestClosed,
        Caller::NoToken,
    ];
    for (p, _) in PERMS {
        callers.push(Caller::Member(Some((p, true))));
        callers.push(Caller::Member(Some((p, false))));
    }
    let mut failures = Vec::new();
    for (i, caller) in callers.iter().enumerate() {
        let gid = format!("g{i}");
        let open = matches!(caller, Caller::GuestOpen);
        let guests = if open { json!({}) } else { Value::Null };
        let (st, body) = s
            .call(
                Method::POST,
                "/v1/groups",
                Some(&owner_token),
                Some(json!({"id": gid, "name": gid, "settings": {"guests": guests}})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        for target in ["target", "peer"] {
            let (st, _) = s
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{gid}/members/{target}"),
                    Some(&owner_token),
                    Some(json!({})),
                )
                .await;
            assert_eq!(st, 201);
        }
        let (st, _) = s
            .call(
                Method::POST,
                &format!("/v1/groups/{gid}/messages"),
                Some(&owner_token),
                Some(json!({"text": "hello"})),
            )
            .await;
        assert_eq!(st, 201);
        let user = format!("caller{i}");
        let token: Option<String> = match caller {
            Caller::Admin => Some(s.admin.clone()),
            Caller::Owner => Some(owner_token.clone()),
            Caller::Member(o) => {
                let perms = o.map_or(json!({}), |(p, v)| json!({ p: v }));
                let (st, m) = s
                    .call(
                        Method::PUT,
                        &format!("/v1/groups/{gid}/members/{user}"),
                        Some(&owner_token),
                        Some(json!({"permissions": perms})),
                    )
                    .await;
                assert_eq!(st, 201);
                assert_eq!(
                    Some(m["effective"].clone()),
                    effective(caller),
                    "effective permissions of {}",
                    row_name(caller)
                );
                Some(s.token(&user).await)
            }
            Caller::GuestOpen | Caller::GuestClosed => Some(s.token(&user).await),
            Caller::NoToken => None,
        };
        let t = token.as_deref();
        let g = format!("/v1/groups/{gid}");
        let calls: Vec<(&str, Method, String, Option<Value>)> = vec![
            (
                "POST /v1/tokens",
                Method::POST,
                "/v1/tokens".into(),
                Some(json!({"user": "someone"})),
            ),
            (
                "POST /v1/groups",
                Method::POST,
                "/v1/groups".into(),
                Some(json!({"name": "own"})),
            ),
            ("GET /v1/groups", Method::GET, "/v1/groups".into(), None),
            ("GET group", Method::GET, g.clone(), None),
            (
                "PATCH group",
                Method::PATCH,
                g.clone(),
                Some(json!({"name": "renamed"})),
            ),
            ("GET members", Method::GET, format!("{g}/members"), None),
            (
                "PUT member",
                Method::PUT,
                format!("{g}/members/newbie"),
                Some(json!({"role": "member"})),
            ),
            (
                "PATCH member",
                Method::PATCH,
                format!("{g}/members/peer"),
                Some(json!({"permissions": {"can_send": false}})),
            ),
            (
                "POST message",
                Method::POST,
                format!("{g}/messages"),
                Some(json!({"text": "hi"})),
            ),
            ("GET messages", Method::GET, format!("{g}/messages"), None),
        ];
        for (name, method, path, body) in calls {
            let (st, resp) = s.call(method, &path, t, body).await;
            let want = expected(name, caller);
            if st != want {
                failures.push(format!("{} {name}: got {st}, want {want}: {resp}", row_name(caller)));
            } else if st >= 400 {
                assert!(
                    resp["error"]["code"].is_string() && resp["error"]["message"].is_string(),
                    "error shape: {resp}"
                );
            }
        }
        // Realtime join uses the same rules as reading the group.
        if let Some(t) = t {
            let mut ws = s.ws(t).await;
            let reply = ws.join(&gid).await;
            let got = if reply["type"] == "joined" { 200 } else { 403 };
            if got != expected("WS join", caller) {
                failures.push(format!("{} WS join: got {reply}", row_name(caller)));
            }
            if got == 200 {
                assert_eq!(
                    Some(reply["permissions"].clone()),
                    effective(caller),
                    "{} join permissions",
                    row_name(caller)
                );
            } else {
                assert_eq!(reply["code"], "forbidden");
            }
        }
        // Destructive calls last.
        for (name, method, path) in [
            ("DELETE member", Method::DELETE, format!("{g}/members/target")),
            ("DELETE group", Method::DELETE, g.clone()),
        ] {
            let (st, resp) = s.call(method, &path, t, None).await;
            let want = expected(name, caller);
            if st != want {
                failures.push(format!("{} {name}: got {st}, want {want}: {resp}", row_name(caller)));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "permission matrix mismatches:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn owners_and_admins_are_protected_from_moderators() {
    let s = Server::start().await;
    let owner = s.token("olive").await;
    let moderator = s.token("mo").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&owner),
            Some(json!({"id": "club", "name": "Club"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/club/members/mo",
            Some(&owner),
            Some(json!({"permissions": {"can_moderate": true}})),
        )
        .await;
    assert_eq!(st, 201);
    // A moderator may not demote the owner, make anyone an admin, or remove the owner.
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/club/members/olive",
            Some(&moderator),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/club/members/zed",
            Some(&moderator),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .call(Method::DELETE, "/v1/groups/club/members/olive", Some(&moderator), None)
        .await;
    assert_eq!(st, 403);
    // A plain member may leave on their own.
    let zed = s.token("zed").await;
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/club/members/zed",
            Some(&moderator),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .call(Method::DELETE, "/v1/groups/club/members/zed", Some(&zed), None)
        .await;
    assert_eq!(st, 204);
    let (st, _) = s.call(Method::GET, "/v1/groups/club", Some(&zed), None).await;
    assert_eq!(st, 403, "a former member of a closed group has no access");
    // Missing things are 404, not 403, for those allowed to look.
    let (st, body) = s.call(Method::GET, "/v1/groups/nope", Some(&owner), None).await;
    assert_eq!((st, body["error"]["code"].as_str()), (404, Some("group_not_found")));
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/club/members/ghost",
            Some(&owner),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);
    // Creating a group with a taken id is a conflict.
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&moderator),
            Some(json!({"id": "club", "name": "Again"})),
        )
        .await;
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("group_exists")));
}
