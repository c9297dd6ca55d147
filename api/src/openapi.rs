//! The OpenAPI 3.1 description served at `/v1/openapi.json`. Written by hand from the routes in
//! `routes/`; the test suite checks that every route it exercises is listed.

use serde_json::{json, Value};

fn op(summary: &str, needs: &str, ok: &str, body: Option<&str>) -> Value {
    let mut o = json!({
        "summary": summary,
        "description": format!("Needs: {needs}."),
        "responses": {
            ok: {"description": "success"},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "403": {"$ref": "#/components/responses/Error"},
            "404": {"$ref": "#/components/responses/Error"}
        }
    });
    if let Some(schema) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    o
}

fn sdp_op(summary: &str, needs: &str) -> Value {
    let mut o = op(summary, needs, "201", None);
    o["requestBody"] = json!({"required": true, "content": {"application/sdp": {"schema": {"type": "string"}}}});
    o["responses"]["201"] = json!({"description": "SDP answer; Location: /v1/sessions/{sid}",
        "content": {"application/sdp": {"schema": {"type": "string"}}}});
    o["responses"]["413"] = json!({"$ref": "#/components/responses/Error"});
    o["responses"]["415"] = json!({"$ref": "#/components/responses/Error"});
    o
}

fn perms_schema() -> Value {
    let props: serde_json::Map<String, Value> = engine::perms::Perm::ALL
        .iter()
        .map(|p| (p.field().to_string(), json!({"type": "boolean"})))
        .collect();
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

/// The whole document.
pub fn document() -> Value {
    let public = json!([]);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Fanfare", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Self-hostable conferencing and live streaming. Errors are {\"error\": {\"code\", \"message\"}}."},
        "security": [{"bearer": []}, {"query_token": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Process is up", "security": public, "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Storage reachable", "security": public, "responses": {"200": {"description": "ready"}, "503": {"$ref": "#/components/responses/Error"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "security": public, "responses": {"200": {"description": "text format"}}}},
            "/v1/tokens": {"post": op("Mint a user token", "an admin token", "201", Some("TokenRequest"))},
            "/v1/dev/token": {"post": {"summary": "Development sign-in: a 24 h user token for {\"user\", \"name\"?} (404 unless [web] dev_tokens, default on for a loopback listen)", "security": public, "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DevTokenRequest"}}}}, "responses": {"201": {"description": "{\"token\"}"}, "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}}},
            "/v1/groups": {
                "get": op("The caller's groups (admin: all)", "a token", "200", None),
                "post": op("Create a group; a user creator becomes owner", "a token", "201", Some("CreateGroup"))
            },
            "/v1/groups/{gid}": {
                "get": op("One group, with the caller's role and permissions", "membership, or an open group", "200", None),
                "patch": op("Change name or settings (settings is a JSON merge patch)", "can_moderate", "200", Some("UpdateGroup")),
                "delete": op("Delete the group, members and history", "owner or admin", "204", None)
            },
            "/v1/groups/{gid}/members": {"get": op("Members with effective permissions", "membership", "200", None)},
            "/v1/groups/{gid}/members/{uid}": {
                "get": op("One member", "membership", "200", None),
                "put": op("Add or replace a member", "can_moderate (owner/admin to touch owners and admins)", "201", Some("MemberBody")),
                "patch": op("Change some of a member's fields", "can_moderate", "200", Some("MemberBody")),
                "delete": op("Remove a member (or leave)", "can_moderate, or being that member", "204", None)
            },
            "/v1/groups/{gid}/messages": {
                "get": op("History, oldest first: ?after=<id>&limit=<1..max_page>", "can_receive", "200", None),
                "post": op("Send a message", "can_send", "201", Some("SendMessage"))
            },
            "/v1/rtc": {"get": op("Realtime WebSocket (?token=); message catalogue in the README", "a token", "101", None)},
            "/v1/rtc/config": {"get": op("ICE servers for clients (from rtc.ice_servers)", "a token", "200", None)},
            "/v1/ingests": {
                "get": op("RTSP ingests the caller may see (admin: all; user: created, or can_list in a group): {\"ingests\": [...]}", "a token", "200", None),
                "post": op("Ingest an RTSP camera into group calls as participant ingest-{id}", "admin, or can_publish in every group", "201", Some("NewIngest"))
            },
            "/v1/ingests/{id}": {
                "get": op("An ingest: status connecting|live|retrying|stopped, counters, last_error (URL credentials redacted)", "admin, creator, or can_list in one of its groups", "200", None),
                "patch": op("Change a running ingest in place (extension): name, groups, record, on_demand; the camera stays connected and keeps its participant and tracks. url, transport and tls_fingerprint are fixed (400 ingest_field_immutable: delete and create again)", "admin, or can_publish in every resulting group and every removed group", "200", Some("IngestUpdate")),
                "delete": op("Stop and delete an ingest (200 with the final view)", "admin, creator, or can_moderate in one of its groups", "200", None)
            },
            "/v1/ingests/{id}/snapshot": {"get": op("The camera's latest picture as image/jpeg, at most 640 px wide (extension; ?token= works for <img src>); an idle on-demand camera is connected for it; 503 ingest_no_picture when none comes within 10 s", "admin, creator, or can_subscribe in one of its groups (and seeing it)", "200", None)},
            "/v1/whip": {"post": sdp_op("WHIP publish to ?groups=a,b (application/sdp offer -> answer, Location)", "can_publish in every group")},
            "/v1/groups/{gid}/whep": {"post": sdp_op("WHEP playback of ?participant=uid or the first publisher", "can_subscribe")},
            "/v1/sessions/{sid}": {
                "patch": op("Trickle ICE (application/trickle-ice-sdpfrag)", "the session's owner or an admin", "204", None),
                "delete": op("End a WHIP/WHEP session", "the session's owner or an admin", "200", None)
            },
            "/v1/sessions/{sid}/groups": {"put": op("Change the groups a live publish fans out to", "owner; can_publish in every group", "200", Some("Groups"))},
            "/v1/sessions/{sid}/layer": {"put": op("Pin a playback to a simulcast layer (extension)", "owner", "200", Some("Layer"))},
            "/v1/sessions/{sid}/view": {"put": op("Tell a playback the size its video is shown at: it gets the smallest layer covering it, none while 0 x 0 (extension)", "owner", "200", Some("View"))},
            "/v1/groups/{gid}/call": {"get": op("Participants of the live call and their tracks", "can_list", "200", None)},
            "/v1/groups/{gid}/call/participants/{uid}/mute": {"post": op("Mute a participant's tracks for everyone ({\"source\"?})", "can_moderate", "200", None)},
            "/v1/groups/{gid}/call/participants/{uid}": {"delete": op("Take a participant out of the call", "can_moderate", "204", None)},
            "/v1/groups/{gid}/recordings": {
                "get": op("Recordings and uploads of the group ({\"recordings\": [...]}, each with playlist_url and poster_url)", "can_playback", "200", None),
                "post": op("Start recording the group call's program", "can_moderate", "201", None)
            },
            "/v1/groups/{gid}/media": {"post": op("Upload a video (raw video/* or multipart/form-data), converted to HLS in the background", "can_publish", "201", None)},
            "/v1/recordings/{rid}": {
                "get": op("One recording", "can_playback in its group", "200", None),
                "delete": op("Delete a recording and its segments", "can_moderate in its group", "204", None)
            },
            "/v1/recordings/{rid}/stop": {"post": op("Stop a recording (ready once its segments are uploaded)", "can_moderate in its group", "200", None)},
            "/v1/recordings/{rid}/index.m3u8": {"get": op("HLS playlist (VOD when ready, EVENT while recording) with signed segment links", "can_playback in its group", "200", None)},
            "/v1/recordings/{rid}/segments/{n}.ts": {"get": {"summary": "A segment, by the signed link (?exp&sig) from the playlist", "security": public, "responses": {"200": {"description": "video/mp2t"}, "403": {"$ref": "#/components/responses/Error"}}}},
            "/v1/recordings/{rid}/poster.jpg": {"get": {"summary": "The poster, by the signed link from the recording's poster_url", "security": public, "responses": {"200": {"description": "image/jpeg"}, "403": {"$ref": "#/components/responses/Error"}}}},
            "/v1/groups/{gid}/live/index.m3u8": {"get": op("Low-latency HLS of the group's program (blocking reload: _HLS_msn, _HLS_part)", "can_subscribe", "200", None)},
            "/v1/groups/{gid}/live/{n}.ts": {"get": {"summary": "A live segment (n.ts) or part (n.k.ts), by the signed link from the playlist", "security": public, "responses": {"200": {"description": "video/mp2t"}, "403": {"$ref": "#/components/responses/Error"}}}},
            "/v1/groups/{gid}/live/program": {"put": op("Choose the program participant ({\"participant\": uid|null}; null: the lead speaker, else the first publisher)", "can_moderate", "200", None)},
            "/v1/openapi.json": {"get": {"summary": "This document", "security": public, "responses": {"200": {"description": "OpenAPI"}}}}
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"}
            },
            "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Perms": perms_schema(),
                "DevTokenRequest": {"type": "object", "required": ["user"], "properties": {"user": {"type": "string"}, "name": {"type": "string"}}},
                "TokenRequest": {"type": "object", "required": ["user"], "properties": {"user": {"type": "string"}, "name": {"type": "string"}, "ttl_s": {"type": "integer"}, "admin": {"type": "boolean"}}},
                "Settings": {"type": "object", "properties": {
                    "members": {"$ref": "#/components/schemas/Perms"},
                    "guests": {"oneOf": [{"$ref": "#/components/schemas/Perms"}, {"type": "null"}]},
                    "media": {"type": "object", "properties": {"audio": {"type": "boolean"}, "video": {"type": "boolean"}, "screen": {"type": "boolean"},
                              "max_resolution": {"enum": ["vga", "hd", "fhd", "4k"]}, "max_bitrate_kbps": {"type": "integer"}}},
                    "record": {"type": "boolean"}}},
                "CreateGroup": {"type": "object", "required": ["name"], "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}, "name": {"type": "string"}, "settings": {"$ref": "#/components/schemas/Settings"}}},
                "UpdateGroup": {"type": "object", "properties": {"name": {"type": "string"}, "settings": {"type": "object"}}},
                "MemberBody": {"type": "object", "properties": {"role": {"enum": ["owner", "admin", "member"]}, "permissions": {"type": "object"},
                               "media": {"type": "object", "properties": {"max_resolution": {"enum": ["vga", "hd", "fhd", "4k"]}, "max_bitrate_kbps": {"type": "integer"}}}}},
                "Groups": {"type": "object", "required": ["groups"], "properties": {"groups": {"type": "array", "items": {"type": "string"}}}},
                "Layer": {"type": "object", "required": ["rid"], "properties": {"rid": {"type": ["string", "null"]}, "track": {"type": "string"}}},
                "View": {"type": "object", "properties": {"width": {"type": ["integer", "null"], "minimum": 0, "maximum": 16384}, "height": {"type": ["integer", "null"], "minimum": 0, "maximum": 16384}, "track": {"type": "string"}}},
                "SendMessage": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                "NewIngest": {"type": "object", "required": ["url", "groups"], "properties": {"url": {"type": "string", "pattern": "^rtsps?://"}, "name": {"type": "string"},
                              "groups": {"type": "array", "items": {"type": "string"}}, "record": {"type": "boolean"}, "transport": {"enum": ["tcp", "udp", "http"]},
                              "tls_fingerprint": {"type": "string", "pattern": "^[0-9A-Fa-f:]+$", "description": "rtsps only: SHA-256 of the camera's certificate (DER), 64 hex digits, colons allowed; pins it instead of checking CAs"},
                              "on_demand": {"type": "boolean", "description": "connect to the camera only while it is read (status idle otherwise)"}}},
                "IngestUpdate": {"type": "object", "additionalProperties": false, "properties": {"name": {"type": ["string", "null"]},
                              "groups": {"type": "array", "minItems": 1, "maxItems": 16, "items": {"type": "string"}}, "record": {"type": "boolean"}, "on_demand": {"type": "boolean"}}},
                "Message": {"type": "object", "properties": {"id": {"type": "string"}, "from": {"type": "string"}, "text": {"type": "string"}, "ts": {"type": "string", "format": "date-time"}}}
            }
        }
    })
}
