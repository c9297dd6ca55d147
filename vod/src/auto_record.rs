//! Automatic recording: a group whose `settings.record` is on has its call recorded from the
//! first publish until the call has been empty for a grace period; and the recordings of RTSP
//! cameras created with `"record": true` ([`RecordParticipant`], [`StopParticipant`]).

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, SpawnHandle, WrapFuture};
use engine::ids::{GroupId, UserId};
use engine::room::messages::CallActivity;

use crate::recordings::RecordingKind;
use crate::Vod;

/// The `created_by` of automatic recordings.
pub const AUTO_USER: &str = "auto-record";
/// An emptied call is stopped being recorded after this long without a publisher.
const GRACE: Duration = Duration::from_secs(10);

/// Starts and stops automatic recordings as calls start and end.
pub struct AutoRecorder {
    vod: Vod,
    db: std::sync::Arc<dyn engine::store::Store>,
    stopping: HashMap<GroupId, SpawnHandle>,
}

impl AutoRecorder {
    /// An auto recorder; register it with the registry's `ObserveCalls`.
    pub fn new(vod: Vod, db: std::sync::Arc<dyn engine::store::Store>) -> AutoRecorder {
        AutoRecorder {
            vod,
            db,
            stopping: HashMap::new(),
        }
    }
}

impl Actor for AutoRecorder {
    type Context = Context<Self>;
}

impl Handler<CallActivity> for AutoRecorder {
    type Result = ();

    fn handle(&mut self, msg: CallActivity, ctx: &mut Context<Self>) {
        let group = msg.group;
        if let Some(h) = self.stopping.remove(&group) {
            ctx.cancel_future(h);
        }
        let vod = self.vod.clone();
        if msg.publishing {
            let db = self.db.clone();
            let fut = async move {
                let g = group.clone();
                let wanted = tokio::task::spawn_blocking(move || db.group(&g))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .flatten()
                    .is_some_and(|g| g.settings.record);
                if !wanted {
                    return;
                }
                let Ok(auto) = UserId::new(AUTO_USER) else { return };
                match vod.start_recording(&group, &auto, RecordingKind::Call, None).await {
                    Ok(rec) => tracing::info!(%group, recording = %rec.id, "automatic recording started"),
                    // Already recording (a moderator started one): nothing to do.
                    Err(e) => tracing::debug!(%group, "no automatic recording: {e}"),
                }
            };
            ctx.spawn(fut.into_actor(self));
        } else {
            let key = group.clone();
            let handle = ctx.run_later(GRACE, move |act, ctx| {
                act.stopping.remove(&group);
                let fut = async move {
                    let Ok(recs) = vod.recording_now(&group).await else {
                        return;
                    };
                    for rec in recs
                        .iter()
                        .filter(|r| r.kind == RecordingKind::Call && r.created_by.as_str() == AUTO_USER)
                    {
                        match vod.stop_recording(&rec.id).await {
                            Ok(_) => tracing::info!(%group, recording = %rec.id, "automatic recording stopped"),
                            Err(e) => tracing::warn!(%group, "cannot stop an automatic recording: {e}"),
                        }
                    }
                };
                ctx.spawn(fut.into_actor(act).map(|_, _, _| ()));
            });
            self.stopping.insert(key, handle);
        }
    }
}

/// Records one participant of a group (an RTSP camera) as a recording of kind `ingest`.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct RecordParticipant {
    pub group: GroupId,
    pub participant: UserId,
}

/// Stops the recordings of a participant (the camera was deleted).
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct StopParticipant {
    pub participant: UserId,
    pub groups: Vec<GroupId>,
}

impl Handler<RecordParticipant> for AutoRecorder {
    type Result = ();

    fn handle(&mut self, msg: RecordParticipant, ctx: &mut Context<Self>) {
        let vod = self.vod.clone();
        let fut = async move {
            let by = msg.participant.clone();
            match vod
                .start_recording(&msg.group, &by, RecordingKind::Ingest, Some(msg.participant.clone()))
                .await
            {
                Ok(rec) => {
                    tracing::info!(participant = %msg.participant, recording = %rec.id, "camera recording started")
                }
                Err(e) => tracing::warn!(participant = %msg.participant, "cannot record the camera: {e}"),
            }
        };
        ctx.spawn(fut.into_actor(self));
    }
}

impl Handler<StopParticipant> for AutoRecorder {
    type Result = ();

    fn handle(&mut self, msg: StopParticipant, ctx: &mut Context<Self>) {
        let vod = self.vod.clone();
        let fut = async move {
            for group in &msg.groups {
                let Ok(recs) = vod.recording_now(group).await else {
                    continue;
                };
                for rec in recs.iter().filter(|r| r.participant.as_ref() == Some(&msg.participant)) {
                    if let Err(e) = vod.stop_recording(&rec.id).await {
                        tracing::warn!(recording = %rec.id, "cannot stop a camera recording: {e}");
                    }
                }
            }
        };
        ctx.spawn(fut.into_actor(self));
    }
}
