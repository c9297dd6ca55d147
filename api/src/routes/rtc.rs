//! `GET /v1/rtc`: upgrades to the realtime WebSocket. Each connection gets a `Participant`
//! actor; this module only pumps frames between the socket and that actor's outbox.

use actix::Actor;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, Session};
use engine::outbox::{Outbox, OUTBOX_CAPACITY};
use engine::participant::{Disconnected, Inbound, Participant};
use futures_util::StreamExt;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Authenticates (`?token=`), upgrades, and starts the connection's participant actor.
pub async fn connect(
    Caller(who): Caller,
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (response, session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ApiError::bad_request("not_websocket", e.to_string()))?;
    let mut stream = stream
        .max_frame_size(state.config.limits.max_ws_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(state.config.limits.max_ws_frame_bytes);
    let (outbox, mut outbox_rx) = Outbox::channel(OUTBOX_CAPACITY);
    let participant = Participant::new(who, outbox, state.rtc.clone()).start();
    actix_web::rt::spawn(async move {
        let mut session = session;
        let reason = loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if participant.send(Inbound(text.to_string())).await.is_err() {
                            break "participant stopped";
                        }
                    }
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        participant.do_send(Inbound(String::new()));
                    }
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            break "socket closed";
                        }
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Close(_))) | None => break "client closed",
                    Some(Err(_)) => break "protocol error or oversize frame",
                },
                out = outbox_rx.recv() => match out {
                    Some(text) => {
                        if session.text(text.as_ref()).await.is_err() {
                            break "socket closed";
                        }
                    }
                    None => break "closed by server",
                },
            }
        };
        tracing::debug!(reason, "realtime connection ended");
        participant.do_send(Disconnected);
        close(session).await;
    });
    Ok(response)
}

async fn close(session: Session) {
    let _ = session.close(None).await;
}

/// `GET /v1/rtc/config` (extension): the ICE servers clients should use, from `rtc.ice_servers`.
pub async fn config(_caller: Caller, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "ice_servers": state.config.rtc.ice_servers }))
}
