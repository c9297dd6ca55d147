//! Automatic recording: a group whose `settings.record` is on has its call recorded from the
//! first publish until the call has been empty for a grace period.

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, SpawnHandle, WrapFuture};
use engine::ids::{GroupId, UserId};
use engine::room::messages::CallActivity;

use crate::recordings::{RecordingKind, RecordingStatus};
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
                    let Ok(recs) = vod.list(&group).await else { return };
                    for rec in recs.iter().filter(|r| {
                        r.status == RecordingStatus::Recording
                            && r.kind == RecordingKind::Call
                            && r.created_by.as_str() == AUTO_USER
                    }) {
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
