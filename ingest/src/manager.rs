//! The `IngestManager`: the table of running ingests. It validates and stores new ingests
//! (table `ingests`, one JSON document per id), starts their [`IngestSession`] on the engine's
//! actor arbiter, restarts the stored ones at boot, applies changes to running ones (`PATCH`,
//! stored first, then handed to the session), and decides who may see, change or delete one.
//!
//! Visibility (our choice; the contract leaves it open): a server admin sees every ingest; a
//! user sees the ingests they created and those in a group where they hold `can_list` (the
//! permission that shows who is in a call). Creating and changing need admin or `can_publish`
//! in every group of the (resulting) list, and for a change also in every group it removes.
//! Deleting needs admin, the creator, or `can_moderate` in one of the ingest's groups.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use actix::{Actor, Addr};
use bytes::Bytes;
use engine::access::Access;
use engine::ids::GroupId;
use engine::media::Media;
use engine::metrics::EngineMetrics;
use engine::perms::{Perm, Principal};
use engine::registry::Registry;
use engine::store::Store;
use time::OffsetDateTime;

use crate::config::IngestConfig;
use crate::error::IngestError;
use crate::model::{IngestRecord, IngestState, IngestUpdate, IngestView, NewIngest, MAX_GROUPS, TABLE};
use crate::session::tracks::StoredPlan;
use crate::session::{
    GetIngestTracks, IngestSession, IngestTracks, SessionParts, StopIngest, TracksLearned, UpdateIngest,
};
use crate::source::SourceUrl;
use crate::status::IngestStatus;
use crate::tls::{self, Fingerprint};

/// The recording hook. The recorder is installed with [`IngestManager::set_recorder`]; each
/// ingest with `"record": true` calls [`IngestRecorder::tracks_published`] once its tracks
/// exist (first successful connection; they then live until the ingest ends, across
/// reconnects) or, when `record` is turned on later, at once; and
/// [`IngestRecorder::ingest_stopped`] when it ends or `record` is turned off.
pub trait IngestRecorder: Send + Sync + 'static {
    /// Start recording participant `tracks.participant` in each of `tracks.groups`.
    fn tracks_published(&self, tracks: &IngestTracks);
    /// The groups of an ingest being recorded changed (`tracks.groups` now); a recording in a
    /// group the camera left no longer gets its media.
    fn groups_changed(&self, tracks: &IngestTracks);
    /// The ingest ended (deleted, or its groups are gone), or `record` was turned off: stop
    /// and finalize its recording.
    fn ingest_stopped(&self, id: &str);
}

/// What the manager needs from the server.
#[derive(Clone)]
pub struct IngestDeps {
    pub store: Arc<dyn Store>,
    pub registry: Addr<Registry>,
    pub media: Media,
    pub metrics: EngineMetrics,
    /// Where the session actors run (the engine's actor arbiter).
    pub arbiter: actix::ArbiterHandle,
    pub config: IngestConfig,
}

#[derive(Clone)]
struct Running {
    record: IngestRecord,
    status: Arc<IngestStatus>,
    addr: Addr<IngestSession>,
}

struct Inner {
    deps: IngestDeps,
    running: Mutex<HashMap<String, Running>>,
    recorder: RwLock<Option<Arc<dyn IngestRecorder>>>,
    /// Held by a change or a deletion from reading the record to handing it to the session,
    /// so two of them never interleave (a change never stores back a deleted record).
    changing: tokio::sync::Mutex<()>,
}

/// The ingests of this server.
#[derive(Clone)]
pub struct IngestManager {
    inner: Arc<Inner>,
}

impl IngestManager {
    /// A manager with no ingest running yet (see [`IngestManager::boot`]).
    pub fn new(deps: IngestDeps) -> IngestManager {
        IngestManager {
            inner: Arc::new(Inner {
                deps,
                running: Mutex::new(HashMap::new()),
                recorder: RwLock::new(None),
                changing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Installs the recorder called for ingests with `record` (those started afterwards; call
    /// it before [`IngestManager::boot`]).
    pub fn set_recorder(&self, recorder: Arc<dyn IngestRecorder>) {
        if let Ok(mut r) = self.inner.recorder.write() {
            *r = Some(recorder);
        }
    }

    /// Starts every stored ingest; returns how many. A record that no longer parses is logged
    /// and skipped.
    pub fn boot(&self) -> Result<usize, IngestError> {
        let docs = self.inner.deps.store.docs(TABLE, "")?;
        let mut n = 0;
        for (key, bytes) in docs {
            let record = match serde_json::from_slice::<IngestRecord>(&bytes) {
                Ok(record) => record,
                Err(e) => {
                    tracing::error!(ingest = %key, "stored ingest is corrupt: {e}");
                    continue;
                }
            };
            match self.start(record) {
                Ok(()) => n += 1,
                Err(e) => tracing::error!(ingest = %key, "stored ingest is invalid: {e}"),
            }
        }
        if n > 0 {
            tracing::info!(ingests = n, "restarted stored ingests");
        }
        Ok(n)
    }

    /// Starts a stored `record` (its URL and TLS settings checked again).
    fn start(&self, record: IngestRecord) -> Result<(), IngestError> {
        let source = SourceUrl::parse(&record.url)?;
        let pin = tls::check_request(&source, record.transport, record.tls_fingerprint.as_deref())?;
        self.launch(record, source, pin);
        Ok(())
    }

    fn launch(&self, record: IngestRecord, source: SourceUrl, pin: Option<Fingerprint>) {
        let status = Arc::new(IngestStatus::default());
        status
            .on_demand
            .store(record.on_demand, std::sync::atomic::Ordering::Relaxed);
        let deps = &self.inner.deps;
        let parts = SessionParts {
            registry: deps.registry.clone(),
            media: deps.media.clone(),
            metrics: deps.metrics.clone(),
            config: deps.config.clone(),
            recorder: self.inner.recorder.read().ok().and_then(|r| r.clone()),
            tracks_learned: self.track_memory(),
        };
        let session = IngestSession::new(record.clone(), source, pin, status.clone(), parts);
        let addr = IngestSession::start_in_arbiter(&deps.arbiter, move |_| session);
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(record.id.clone(), Running { record, status, addr });
        }
    }

    /// Creates an ingest for `who` (admin, or `can_publish` in every group), stores it and
    /// starts it.
    pub async fn create(&self, who: &Principal, req: NewIngest) -> Result<IngestView, IngestError> {
        let deps = &self.inner.deps;
        let source = SourceUrl::parse(&req.url)?;
        let pin = tls::check_request(&source, req.transport, req.tls_fingerprint.as_deref())?;
        if let Some(name) = &req.name {
            engine::model::validate_name(name)?;
        }
        let groups = group_list(req.groups)?;
        self.require_publish(who, &groups, &[])?;
        let timeout = std::time::Duration::from_secs(deps.config.connect_timeout_s);
        source.check_allowed(deps.config.allow_remote, timeout).await?;
        let count = self.inner.running.lock().map(|r| r.len()).unwrap_or(0);
        if count >= deps.config.max_ingests {
            return Err(IngestError::TooMany(count));
        }
        let record = IngestRecord {
            id: new_id(),
            url: req.url,
            name: req.name,
            groups,
            record: req.record,
            transport: req.transport,
            tls_fingerprint: pin.map(|p| p.to_string()),
            on_demand: req.on_demand,
            tracks: Vec::new(),
            created_by: who.user.clone(),
            created_at: OffsetDateTime::now_utc(),
        };
        self.save(&record)?;
        tracing::info!(ingest = %record.id, url = %source.redacted, by = %who.user, "ingest created");
        self.launch(record.clone(), source, pin);
        Ok(self.current_view(&record))
    }

    /// Fails unless `who` holds `can_publish` in each of `groups` (a server admin holds it in
    /// every group); a group that does not exist is `GroupNotFound`, unless `stored` lists it
    /// (deleted since the ingest was stored: nobody acts there any more).
    fn require_publish(&self, who: &Principal, groups: &[GroupId], stored: &[GroupId]) -> Result<(), IngestError> {
        for g in groups {
            match Access::load(self.inner.deps.store.as_ref(), who, g) {
                Ok(access) => {
                    access.require(Perm::Publish)?;
                }
                Err(engine::EngineError::GroupNotFound(_)) if stored.contains(g) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// What a session calls when its camera describes tracks other than its record keeps: the
    /// record, if the ingest still runs, is stored with them (under the lock changes and
    /// deletions hold, so a deleted ingest is not written back).
    fn track_memory(&self) -> TracksLearned {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |id: &str, tracks: Vec<StoredPlan>| {
            let (inner, id) = (inner.clone(), id.to_owned());
            tokio::spawn(async move {
                let Some(inner) = inner.upgrade() else { return };
                let _changing = inner.changing.lock().await;
                let record = inner.running.lock().ok().and_then(|mut running| {
                    let r = running.get_mut(&id)?;
                    r.record.tracks = tracks;
                    Some(r.record.clone())
                });
                if let Some(record) = record {
                    if let Err(e) = (IngestManager { inner: inner.clone() }).save(&record) {
                        tracing::warn!(ingest = %id, "cannot store the camera's tracks: {e}");
                    }
                }
            });
        })
    }

    /// Writes `record` to the store.
    fn save(&self, record: &IngestRecord) -> Result<(), IngestError> {
        let bytes = serde_json::to_vec(record).map_err(|e| IngestError::Invalid(e.to_string()))?;
        self.inner.deps.store.put_doc(TABLE, &record.id, &bytes)?;
        Ok(())
    }

    /// Changes an ingest while it runs (`PATCH`, extension): its `name`, `groups` and `record`.
    /// Needs admin, or `can_publish` in every group of the resulting list and in every group
    /// removed (as creating does). The record is stored first, then the session applies it
    /// live: the camera connection, the participant and its tracks stay; the tracks leave
    /// removed groups' calls and join added ones before this returns. Returns the new view.
    pub async fn update(&self, who: &Principal, id: &str, patch: IngestUpdate) -> Result<IngestView, IngestError> {
        let fixed = patch.fixed_fields();
        if !fixed.is_empty() {
            return Err(IngestError::Immutable(fixed));
        }
        if let Some(Some(name)) = &patch.name {
            engine::model::validate_name(name)?;
        }
        let groups = patch.groups.map(group_list).transpose()?;
        let _changing = self.inner.changing.lock().await;
        let Running { mut record, addr, .. } = self.running(who, id)?;
        let regrouped = groups.is_some();
        if let Some(groups) = groups {
            let mut touched = groups.clone();
            touched.extend(record.groups.iter().filter(|g| !groups.contains(g)).cloned());
            self.require_publish(who, &touched, &record.groups)?;
            record.groups = groups;
        } else {
            self.require_publish(who, &record.groups, &record.groups)?;
        }
        if let Some(name) = patch.name {
            record.name = name;
        }
        if let Some(on) = patch.record {
            record.record = on;
        }
        if let Some(on) = patch.on_demand {
            record.on_demand = on;
        }
        self.save(&record)?;
        if let Ok(mut running) = self.inner.running.lock() {
            if let Some(r) = running.get_mut(&record.id) {
                r.record = record.clone();
            }
        }
        if addr.send(UpdateIngest(record.clone())).await.is_err() && regrouped {
            // Its session had ended (every group gone): start it again in the new groups.
            self.start(record.clone())?;
        }
        tracing::info!(ingest = %record.id, by = %who.user, "ingest changed");
        Ok(self.current_view(&record))
    }

    /// The stored record, status and session of an ingest `who` may see.
    fn running(&self, who: &Principal, id: &str) -> Result<Running, IngestError> {
        let visible = self.get(who, id)?;
        let running = self
            .inner
            .running
            .lock()
            .map_err(|_| IngestError::NotFound(id.into()))?;
        running
            .get(&visible.id)
            .cloned()
            .ok_or_else(|| IngestError::NotFound(id.into()))
    }

    /// The running ingest's view of `record` (as a new, idle ingest if it is not running).
    fn current_view(&self, record: &IngestRecord) -> IngestView {
        self.view_of(&record.id)
            .unwrap_or_else(|| IngestView::of(record, IngestStatus::default().snapshot()))
    }

    fn view_of(&self, id: &str) -> Option<IngestView> {
        let running = self.inner.running.lock().ok()?;
        running.get(id).map(|r| IngestView::of(&r.record, r.status.snapshot()))
    }

    fn records(&self) -> Vec<(IngestRecord, Arc<IngestStatus>)> {
        let Ok(running) = self.inner.running.lock() else {
            return Vec::new();
        };
        let mut v: Vec<_> = running.values().map(|r| (r.record.clone(), r.status.clone())).collect();
        v.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        v
    }

    fn holds_in_any(&self, who: &Principal, record: &IngestRecord, perm: Perm) -> bool {
        who.admin
            || record.created_by == who.user
            || record.groups.iter().any(|g| {
                Access::load(self.inner.deps.store.as_ref(), who, g)
                    .ok()
                    .and_then(|a| a.perms)
                    .is_some_and(|p| p.has(perm))
            })
    }

    /// The ingests `who` may see, oldest first.
    pub fn list(&self, who: &Principal) -> Vec<IngestView> {
        self.records()
            .into_iter()
            .filter(|(r, _)| self.holds_in_any(who, r, Perm::List))
            .map(|(r, s)| IngestView::of(&r, s.snapshot()))
            .collect()
    }

    /// One ingest, if `who` may see it.
    pub fn get(&self, who: &Principal, id: &str) -> Result<IngestView, IngestError> {
        let found = self
            .records()
            .into_iter()
            .find(|(r, _)| r.id == id)
            .filter(|(r, _)| self.holds_in_any(who, r, Perm::List));
        match found {
            Some((r, s)) => Ok(IngestView::of(&r, s.snapshot())),
            None => Err(IngestError::NotFound(id.chars().take(64).collect())),
        }
    }

    /// Deletes an ingest: removes its record, stops it; returns its final view (`stopped`).
    pub async fn delete(&self, who: &Principal, id: &str) -> Result<IngestView, IngestError> {
        let _changing = self.inner.changing.lock().await;
        let Running { record, status, addr } = self.running(who, id)?;
        if !self.holds_in_any(who, &record, Perm::Moderate) {
            return Err(engine::EngineError::Forbidden(
                "deleting an ingest needs admin, its creator, or can_moderate in one of its groups".into(),
            )
            .into());
        }
        self.inner.deps.store.delete_docs(TABLE, &exact_key(&record.id))?;
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&record.id);
        }
        status.set_state(IngestState::Stopped);
        let _ = addr
            .send(StopIngest {
                reason: "the ingest was deleted",
            })
            .await;
        tracing::info!(ingest = %record.id, by = %who.user, "ingest deleted");
        Ok(IngestView::of(&record, status.snapshot()))
    }

    /// The camera's latest picture, for a snapshot (extension): the last keyframe of its first
    /// video track (Annex-B H.264 or H.265), for `who` if they may see the ingest and hold
    /// `can_subscribe` in one of its groups (or are admin or its creator). A camera that is not
    /// live (an idle on-demand one, one connecting or retrying) is read until its next keyframe,
    /// for up to [`SNAPSHOT_WAIT`]: a snapshot of an idle on-demand camera connects it.
    pub async fn snapshot(&self, who: &Principal, id: &str) -> Result<Bytes, IngestError> {
        let Running { record, status, .. } = self.running(who, id)?;
        if !self.holds_in_any(who, &record, Perm::Subscribe) {
            return Err(engine::EngineError::Forbidden(
                "a camera's snapshot needs admin, its creator, or can_subscribe in one of its groups".into(),
            )
            .into());
        }
        if let Some(picture) = status.picture() {
            return Ok(picture);
        }
        let video = self.tracks(&record.id).await.and_then(|t| {
            t.tracks
                .into_iter()
                .find(|f| f.info.kind == engine::track::MediaKind::Video)
        });
        let Some(mut tap) = video.and_then(|f| f.tap_frames(8)) else {
            return Err(IngestError::NoPicture("the camera has no video track (yet)".into()));
        };
        let keyframe = async {
            while let Some(frame) = tap.recv().await {
                if frame.keyframe {
                    return Some(frame.data);
                }
            }
            None
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, keyframe).await {
            Ok(Some(picture)) => Ok(picture),
            _ => Err(IngestError::NoPicture(format!(
                "the camera sent no picture within {} s",
                SNAPSHOT_WAIT.as_secs()
            ))),
        }
    }

    /// The recording hook by id: the ingest's tracks (empty before its first connection).
    pub async fn tracks(&self, id: &str) -> Option<IngestTracks> {
        let addr = self.inner.running.lock().ok()?.get(id).map(|r| r.addr.clone())?;
        addr.send(GetIngestTracks).await.ok()
    }

    /// How many ingests are running.
    pub fn len(&self) -> usize {
        self.inner.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Whether no ingest is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long a snapshot of a camera that is not live waits for its next keyframe (a
/// connection and a group of pictures).
pub const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request's group list: 1 to [`MAX_GROUPS`] groups, duplicates dropped (first one kept).
fn group_list(requested: Vec<GroupId>) -> Result<Vec<GroupId>, IngestError> {
    if requested.is_empty() || requested.len() > MAX_GROUPS {
        return Err(IngestError::Invalid(format!(
            "groups must list 1 to {MAX_GROUPS} groups"
        )));
    }
    let mut groups: Vec<GroupId> = Vec::new();
    for g in requested {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    Ok(groups)
}

/// Ids are 12 lowercase alphanumerics, all the same length, so an id is never the prefix of
/// another and `delete_docs(prefix = id)` removes exactly one record.
fn exact_key(id: &str) -> String {
    id.to_string()
}

/// A new ingest id.
fn new_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<GroupId> {
        names.iter().map(|n| GroupId::new(*n).unwrap()).collect()
    }

    #[test]
    fn group_lists_are_1_to_16_groups_without_duplicates() {
        assert_eq!(group_list(ids(&["b", "a", "b"])).unwrap(), ids(&["b", "a"]));
        assert!(matches!(group_list(Vec::new()), Err(IngestError::Invalid(_))));
        let many: Vec<String> = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(group_list(ids(&many)).is_err());
        assert_eq!(group_list(ids(&many[..MAX_GROUPS])).unwrap().len(), MAX_GROUPS);
    }
}
