//! The HTTP routes, one module per resource.

pub mod call;
pub mod debug;
pub mod dev;
pub mod groups;
pub mod ingests;
pub mod live;
pub mod members;
pub mod messages;
pub mod ops;
pub mod recordings;
pub mod rtc;
pub mod tokens;
pub mod whep;
pub mod whip;

use actix_web::web;
use engine::ids::{GroupId, UserId};

use crate::error::ApiError;
use crate::state::AppState;

/// Registers every `/v1` route and the operations endpoints.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics))
        .service(
            web::scope("/v1")
                .route("/openapi.json", web::get().to(ops::openapi))
                .route("/tokens", web::post().to(tokens::create))
                .service(web::resource("/groups").get(groups::list).post(groups::create))
                .service(
                    web::resource("/groups/{gid}")
                        .get(groups::get)
                        .patch(groups::update)
                        .delete(groups::delete),
                )
                .route("/groups/{gid}/members", web::get().to(members::list))
                .service(
                    web::resource("/groups/{gid}/members/{uid}")
                        .get(members::get)
                        .put(members::put)
                        .patch(members::patch)
                        .delete(members::delete),
                )
                .service(
                    web::resource("/groups/{gid}/messages")
                        .get(messages::list)
                        .post(messages::send),
                )
                .route("/groups/{gid}/call", web::get().to(call::get))
                .route("/groups/{gid}/call/participants/{uid}/mute", web::post().to(call::mute))
                .route("/groups/{gid}/call/participants/{uid}", web::delete().to(call::remove))
                .route("/groups/{gid}/whep", web::post().to(whep::play))
                .service(
                    web::resource("/groups/{gid}/recordings")
                        .get(recordings::list)
                        .post(recordings::start),
                )
                .route("/groups/{gid}/media", web::post().to(recordings::upload))
                .service(
                    web::resource("/recordings/{rid}")
                        .get(recordings::get)
                        .delete(recordings::delete),
                )
                .route("/recordings/{rid}/stop", web::post().to(recordings::stop))
                .route("/recordings/{rid}/index.m3u8", web::get().to(recordings::playlist))
                .route("/recordings/{rid}/poster.jpg", web::get().to(recordings::poster))
                .route("/recordings/{rid}/segments/{name}", web::get().to(recordings::segment))
                .route("/groups/{gid}/live/index.m3u8", web::get().to(live::playlist))
                .route("/groups/{gid}/live/program", web::put().to(live::set_program))
                .route("/groups/{gid}/live/{name}", web::get().to(live::chunk))
                .service(web::resource("/ingests").get(ingests::list).post(ingests::create))
                .service(
                    web::resource("/ingests/{id}")
                        .get(ingests::get)
                        .patch(ingests::update)
                        .delete(ingests::delete),
                )
                .route("/ingests/{id}/snapshot", web::get().to(ingests::snapshot))
                .route("/whip", web::post().to(whip::publish))
                .service(
                    web::resource("/sessions/{sid}")
                        .patch(whip::trickle)
                        .delete(whip::delete),
                )
                .route("/sessions/{sid}/groups", web::put().to(whip::set_groups))
                .route("/sessions/{sid}/layer", web::put().to(whep::set_layer))
                .route("/sessions/{sid}/view", web::put().to(whep::set_view))
                .route("/rtc", web::get().to(rtc::connect))
                .route("/rtc/config", web::get().to(rtc::config))
                .route("/debug/groups/{gid}/room/crash", web::post().to(debug::crash_room))
                .route("/dev/token", web::post().to(dev::token)),
        );
}

/// Validates a `{gid}` path segment.
pub fn group_id(raw: &str) -> Result<GroupId, ApiError> {
    GroupId::new(raw).map_err(ApiError::from)
}

/// Validates a `{uid}` path segment.
pub fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::new(raw).map_err(ApiError::from)
}

/// Tells the group's room (if active) that storage changed, and waits until it has applied it.
pub async fn group_changed(state: &AppState, group: &GroupId) {
    let _ = state
        .registry
        .send(engine::registry::GroupChanged { group: group.clone() })
        .await;
}
