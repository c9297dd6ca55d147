//! Messages a [`super::Participant`] handles (besides the room's `Removed` notice).

use actix::Message;

/// One text frame from the client's socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound(pub String);

/// The client's socket closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnected;
