//! Permission changes apply live: the classroom case over REST, and live delivery over the
//! realtime socket stopping at once when a member loses `can_receive` or is removed. Also: a
//! room that panics is restarted and its members are told.

use std::time::Duration;

use fanfare_tests::Server;
use reqwest::Method;
use serde_json::json;

async fn classroom(s: &Server) -> (String, String) {
    let teacher = s.token("teacher").await;
    let student = s.token("student").await;
    let settings = json!({"members": {"can_send": false, "can_publish": false}});
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&teacher),
            Some(json!({"id": "class", "name": "Class", "settings": settings})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    add_member(s, &teacher, "student").await;
    (teacher, student)
}

/// `teacher` makes `user` a member of the class (with the group's defaults).
async fn add_member(s: &Server, teacher: &str, user: &str) {
    let (st, body) = s
        .call(
            Method::PUT,
            &format!("/v1/groups/class/members/{user}"),
            Some(teacher),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
}

/// Classroom: a student raises a hand (extension `raise_hand`); the teacher hears it, a
/// classmate joining later sees it in `joined`, and granting `can_publish` lowers it for
/// everyone. A hand outside a joined group is refused.
#[tokio::test]
async fn a_raised_hand_reaches_the_teacher_and_comes_down_when_the_floor_is_given() {
    let s = Server::start().await;
    let (teacher, student) = classroom(&s).await;
    add_member(&s, &teacher, "pupil").await;
    let pupil = s.token("pupil").await;
    let mut t = s.ws(&teacher).await;
    assert_eq!(t.join("class").await["type"], "joined");
    let mut st_ws = s.ws(&student).await;

    st_ws
        .send(json!({"type": "raise_hand", "group": "class", "req": "h0"}))
        .await;
    let refused = st_ws.reply("h0", Duration::from_secs(5)).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("invalid_argument")),
        "{refused}"
    );
    assert_eq!(st_ws.join("class").await["type"], "joined");
    st_ws
        .send(json!({"type": "raise_hand", "group": "class", "req": "h1"}))
        .await;
    let r = st_ws.reply("h1", Duration::from_secs(5)).await;
    assert_eq!(
        (r["type"].as_str(), r["user"].as_str(), &r["raised"]),
        (Some("hand_raised"), Some("student"), &json!(true)),
        "{r}"
    );
    let ev = t.expect("hand_raised").await;
    assert_eq!(
        (ev["user"].as_str(), &ev["raised"]),
        (Some("student"), &json!(true)),
        "{ev}"
    );

    // A classmate joining later sees the hand.
    let mut p = s.ws(&pupil).await;
    let joined = p.join("class").await;
    let hands: Vec<(&str, bool)> = joined["participants"]
        .as_array()
        .expect("participants")
        .iter()
        .map(|x| {
            (
                x["user"].as_str().unwrap_or(""),
                x["hand_raised"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        hands.contains(&("student", true)) && hands.contains(&("teacher", false)),
        "{joined}"
    );

    // The teacher gives the floor: the hand comes down, for the student too.
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(json!({"permissions": {"can_publish": true}})),
        )
        .await;
    assert_eq!(st, 200);
    for ws in [&mut t, &mut st_ws, &mut p] {
        let ev = ws.expect("hand_raised").await;
        assert_eq!(
            (ev["user"].as_str(), &ev["raised"]),
            (Some("student"), &json!(false)),
            "{ev}"
        );
    }

    // Raised and lowered by the student: the teacher hears both; nothing for a repeat.
    for (req, raised) in [("h2", true), ("h3", false), ("h4", false)] {
        st_ws
            .send(json!({"type": "raise_hand", "group": "class", "raised": raised, "req": req}))
            .await;
        assert_eq!(st_ws.reply(req, Duration::from_secs(5)).await["raised"], raised);
    }
    assert_eq!(t.expect("hand_raised").await["raised"], true);
    assert_eq!(t.expect("hand_raised").await["raised"], false);
    t.expect_no("hand_raised", Duration::from_millis(500)).await;
}

#[tokio::test]
async fn teacher_grants_and_revokes_can_send() {
    let s = Server::start().await;
    let (teacher, student) = classroom(&s).await;
    let mut ws = s.ws(&student).await;
    assert_eq!(ws.join("class").await["permissions"]["can_send"], false);
    let say = |text: &'static str| {
        s.call(
            Method::POST,
            "/v1/groups/class/messages",
            Some(&student),
            Some(json!({"text": text})),
        )
    };

    let (st, body) = say("may I?").await;
    assert_eq!((st, body["error"]["code"].as_str()), (403, Some("forbidden")));

    let grant = json!({"permissions": {"can_send": true}});
    let (st, m) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(grant),
        )
        .await;
    assert_eq!((st, &m["effective"]["can_send"]), (200, &json!(true)));
    let ev = ws.expect("permissions_changed").await;
    assert_eq!(ev["permissions"]["can_send"], true);
    let (st, msg) = say("thank you").await;
    assert_eq!(
        (st, msg["from"].as_str(), msg["text"].as_str()),
        (201, Some("student"), Some("thank you"))
    );

    let revoke = json!({"permissions": {"can_send": false}});
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(revoke),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(ws.expect("permissions_changed").await["permissions"]["can_send"], false);
    let (st, _) = say("one more").await;
    assert_eq!(st, 403);

    // The same rule holds on the socket.
    ws.send(json!({"type": "send_message", "group": "class", "text": "psst", "req": "s1"}))
        .await;
    let err = ws.expect("error").await;
    assert_eq!(
        (err["code"].as_str(), err["req"].as_str()),
        (Some("forbidden"), Some("s1"))
    );

    // Changing the group default applies to the student too (no override left for can_send).
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(json!({"permissions": {"can_publish": true}})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/class/members/student",
            Some(&teacher),
            Some(json!({"permissions": {}})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/class",
            Some(&teacher),
            Some(json!({"settings": {"members": {"can_send": true}}})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = say("now everyone may talk").await;
    assert_eq!(st, 201);
}

#[tokio::test]
async fn losing_can_receive_or_membership_stops_delivery_at_once() {
    let s = Server::start().await;
    let alice = s.token("alice").await;
    let bob = s.token("bob").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"id": "team", "name": "Team"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/groups/team/members/bob",
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 201);
    let mut bob_ws = s.ws(&bob).await;
    let joined = bob_ws.join("team").await;
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["participants"], json!([]), "nobody else is connected yet");
    // The joiner's media caps: the group's defaults.
    assert_eq!(
        joined["media"],
        json!({"max_resolution": "fhd", "max_bitrate_kbps": 4000}),
        "{joined}"
    );
    // A moderator caps bob: he is told at once, and only he.
    let (st, body) = s
        .call(
            Method::PATCH,
            "/v1/groups/team/members/bob",
            Some(&alice),
            Some(json!({"media": {"max_resolution": "vga"}})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let changed = bob_ws.expect("media_changed").await;
    assert_eq!(
        (changed["group"].clone(), changed["media"].clone()),
        (
            json!("team"),
            json!({"max_resolution": "vga", "max_bitrate_kbps": 4000})
        ),
        "{changed}"
    );
    let mut alice_ws = s.ws(&alice).await;
    let joined = alice_ws.join("team").await;
    assert_eq!(joined["type"], "joined");
    // The joiner learns who is already there.
    assert_eq!(joined["participants"][0]["user"], "bob", "{joined}");
    let post = |text: &'static str| {
        s.call(
            Method::POST,
            "/v1/groups/team/messages",
            Some(&alice),
            Some(json!({"text": text})),
        )
    };

    let (st, sent) = post("one").await;
    assert_eq!(st, 201);
    let got = bob_ws.expect("message").await;
    assert_eq!(got["message"], sent);
    assert_eq!(got["group"], "team");
    assert_eq!(
        alice_ws.expect("message").await["message"],
        sent,
        "the sender's own connection gets it too"
    );

    // Revoke can_receive: the very next message does not reach bob; alice still gets it.
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/team/members/bob",
            Some(&alice),
            Some(json!({"permissions": {"can_receive": false}})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        bob_ws.expect("permissions_changed").await["permissions"]["can_receive"],
        false
    );
    let (st, _) = post("two").await;
    assert_eq!(st, 201);
    assert_eq!(alice_ws.expect("message").await["message"]["text"], "two");
    bob_ws.expect_no("message", Duration::from_millis(500)).await;
    let (st, _) = s.call(Method::GET, "/v1/groups/team/messages", Some(&bob), None).await;
    assert_eq!(st, 403);

    // Restore, then remove bob from the group: he is told and gets nothing more.
    let (st, _) = s
        .call(
            Method::PATCH,
            "/v1/groups/team/members/bob",
            Some(&alice),
            Some(json!({"permissions": {"can_receive": true}})),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = post("three").await;
    assert_eq!(st, 201);
    assert_eq!(bob_ws.expect("message").await["message"]["text"], "three");
    let (st, _) = s
        .call(Method::DELETE, "/v1/groups/team/members/bob", Some(&alice), None)
        .await;
    assert_eq!(st, 204);
    let left = bob_ws.expect("left").await;
    assert_eq!(
        (left["group"].as_str(), left["reason"].as_str()),
        (Some("team"), Some("removed"))
    );
    let (st, _) = post("four").await;
    assert_eq!(st, 201);
    bob_ws.expect_no("message", Duration::from_millis(500)).await;
    assert_eq!(bob_ws.join("team").await["code"], "forbidden");

    // History for a member is complete and ordered.
    let (st, hist) = s
        .call(Method::GET, "/v1/groups/team/messages?limit=10", Some(&alice), None)
        .await;
    assert_eq!(st, 200);
    let texts: Vec<_> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["one", "two", "three", "four"]);

    // Deleting the group tells those still in the room.
    let (st, _) = s.call(Method::DELETE, "/v1/groups/team", Some(&alice), None).await;
    assert_eq!(st, 204);
    assert_eq!(alice_ws.expect("left").await["reason"], "group_deleted");
}

#[tokio::test]
async fn a_panicking_room_is_restarted_and_members_are_told() {
    let s = Server::start().await;
    let alice = s.token("alice").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"id": "fragile", "name": "Fragile"})),
        )
        .await;
    assert_eq!(st, 201);
    let mut ws = s.ws(&alice).await;
    assert_eq!(ws.join("fragile").await["type"], "joined");
    assert_eq!(s.metric("fanfare_rooms").await, 1.0);

    let (st, _) = s
        .call(
            Method::POST,
            "/v1/debug/groups/fragile/room/crash",
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(st, 202);
    assert_eq!(ws.expect("room_restarted").await["group"], "fragile");
    assert_eq!(s.metric("fanfare_room_restarts_total").await, 1.0);

    // The restarted room still delivers, and the server still serves.
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups/fragile/messages",
            Some(&alice),
            Some(json!({"text": "still here"})),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(ws.expect("message").await["message"]["text"], "still here");
    assert_eq!(s.metric("fanfare_rooms").await, 1.0);
    let (st, _) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(st, 200);

    // Non-admins cannot inject faults.
    let (st, _) = s
        .call(Method::POST, "/v1/debug/groups/fragile/room/crash", Some(&alice), None)
        .await;
    assert_eq!(st, 403);

    // When the last connection leaves, the room goes away.
    drop(ws);
    let mut rooms = 1.0;
    for _ in 0..50 {
        rooms = s.metric("fanfare_rooms").await;
        if rooms == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rooms, 0.0);
    assert_eq!(s.metric("fanfare_connections").await, 0.0);
}
