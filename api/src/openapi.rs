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
            "/v1/whip": {"post": sdp_op("WHIP publish to ?groups=a,b (application/sdp offer -> answer, Location)", "can_publish in every group")},
            "/v1/groups/{gid}/whep": {"post": sdp_op("WHEP playback of ?participant=uid or the first publisher", "can_subscribe")},
            "/v1/sessions/{sid}": {
                "patch": op("Trickle ICE (application/trickle-ice-sdpfrag)", "the session's owner or an admin", "204", None),
                "delete": op("End a WHIP/WHEP session", "the session's owner or an admin", "200", None)
            },
            "/v1/sessions/{sid}/groups": {"put": op("Change the groups a live publish fans out to", "owner; can_publish in every group", "200", Some("Groups"))},
            "/v1/groups/{gid}/call": {"get": op("Participants of the live call and their tracks", "can_list", "200", None)},
            "/v1/groups/{gid}/call/participants/{uid}/mute": {"post": op("Mute a participant's tracks for everyone ({\"source\"?})", "can_moderate", "200", None)},
            "/v1/groups/{gid}/call/participants/{uid}": {"delete": op("Take a participant out of the call", "can_moderate", "204", None)},
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
                "SendMessage": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}},
                "Message": {"type": "object", "properties": {"id": {"type": "string"}, "from": {"type": "string"}, "text": {"type": "string"}, "ts": {"type": "string", "format": "date-time"}}}
            }
        }
    })
}
