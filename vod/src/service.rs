//! [`Vod`]: the HLS side as the API sees it. It owns the object store and its spool, the
//! directory of running [`Program`]s (one per group with live viewers or a recording), the
//! link signer, and the recordings' lifecycle: start, stop, upload, list, play, delete, and the
//! reconciliation of what a previous run left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix::{Actor, Addr};
use bytes::Bytes;
use engine::ids::{GroupId, UserId};
use engine::registry::Registry;
use engine::store::Store;
use time::OffsetDateTime;

use crate::live::{Chunk, LiveBuffer, LiveError};
use crate::program::{Pin, Program, ProgramDeps, ProgramKey, Record, StopRecording, Touch};
use crate::recordings::{self, Recording, RecordingKind, RecordingStatus, SegmentRow};
use crate::segment::{SegmentEvent, SegmenterConfig};
use crate::signing::{LinkError, Signer};
use crate::storage::{open_object_store, ObjectStoreConfig, SegmentStore};
use crate::VodError;

/// Settings of the HLS side.
#[derive(Clone, Debug)]
pub struct VodConfig {
    pub data_dir: PathBuf,
    pub object_store: ObjectStoreConfig,
    /// How long signed segment links live.
    pub link_ttl: Duration,
    pub segmenting: SegmenterConfig,
    /// The server's API secret (signs links).
    pub secret: String,
}

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The HLS side; cheap to clone.
#[derive(Clone)]
pub struct Vod {
    inner: Arc<Inner>,
}

type Programs = Arc<Mutex<HashMap<ProgramKey, (u64, Addr<Program>, Arc<LiveBuffer>)>>>;

struct Inner {
    db: Arc<dyn Store>,
    store: SegmentStore,
    signer: Signer,
    registry: Addr<Registry>,
    programs: Programs,
    config: VodConfig,
    rt: tokio::runtime::Handle,
    metrics: crate::metrics::VodMetrics,
}

fn link_error(e: LinkError) -> VodError {
    match e {
        LinkError::Expired => VodError::Link("this link has expired; reload the playlist".into()),
        LinkError::BadSignature => VodError::Link("this link's signature does not match".into()),
    }
}

/// Where live windows keep their segment files (one directory per program).
fn live_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("live")
}

fn blocking_err(e: tokio::task::JoinError) -> VodError {
    VodError::Io(std::io::Error::other(e))
}

impl Vod {
    /// Opens the object store and spool, and settles recordings a previous run left open.
    pub fn start(
        config: VodConfig,
        db: Arc<dyn Store>,
        registry: Addr<Registry>,
        metrics: crate::metrics::VodMetrics,
    ) -> Result<Vod, VodError> {
        let rt = match RUNTIME.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("vod")
                    .enable_all()
                    .build()?;
                RUNTIME.get_or_init(|| rt)
            }
        };
        // Live windows of a previous run are stale.
        let _ = std::fs::remove_dir_all(live_dir(&config.data_dir));
        let objects = open_object_store(&config.object_store, &config.data_dir)?;
        let store = {
            let _enter = rt.enter();
            SegmentStore::start(objects, db.clone(), &config.data_dir, metrics.clone())?
        };
        let vod = Vod {
            inner: Arc::new(Inner {
                db,
                store,
                signer: Signer::new(&config.secret, config.link_ttl),
                registry,
                programs: Default::default(),
                config,
                rt: rt.handle().clone(),
                metrics,
            }),
        };
        vod.reconcile()?;
        Ok(vod)
    }

    /// Recordings that were open when the server stopped are closed with what was stored;
    /// uploads that were converting are marked failed.
    fn reconcile(&self) -> Result<(), VodError> {
        let db = self.inner.db.as_ref();
        for mut rec in recordings::all(db)? {
            match (rec.status, rec.kind) {
                (RecordingStatus::Recording, _)
                | (RecordingStatus::Processing, RecordingKind::Call | RecordingKind::Ingest) => {
                    tracing::info!(recording = %rec.id, "closing a recording left open by the previous run");
                    rec.ended_at.get_or_insert_with(OffsetDateTime::now_utc);
                    self.finish_when_uploaded(rec)?;
                }
                (RecordingStatus::Processing, RecordingKind::Upload) => {
                    rec.status = RecordingStatus::Failed;
                    rec.error = Some("the server restarted while converting this upload; upload it again".into());
                    recordings::save(db, &rec)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The object store behind its spool.
    pub fn store(&self) -> &SegmentStore {
        &self.inner.store
    }

    /// The link signer.
    pub fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    /// The program of `key`, started if needed (must be called inside the actix system).
    fn program(&self, key: ProgramKey) -> (Addr<Program>, Arc<LiveBuffer>) {
        let mut programs = match self.inner.programs.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((_, addr, live)) = programs.get(&key) {
            if addr.connected() {
                return (addr.clone(), live.clone());
            }
        }
        let cfg = self.inner.config.segmenting;
        let generation = engine::next_id();
        let live = Arc::new(LiveBuffer::new(
            cfg.target,
            cfg.part,
            Some(live_dir(&self.inner.config.data_dir).join(generation.to_string())),
        ));
        let (dir, k) = (self.inner.programs.clone(), key.clone());
        let on_stop = Box::new(move || {
            if let Ok(mut p) = dir.lock() {
                if p.get(&k).is_some_and(|(g, _, _)| *g == generation) {
                    p.remove(&k);
                }
            }
        });
        let deps = ProgramDeps {
            registry: self.inner.registry.clone(),
            store: self.inner.store.clone(),
            db: self.inner.db.clone(),
            segmenting: cfg,
            runtime: self.inner.rt.clone(),
            metrics: self.inner.metrics.clone(),
        };
        let addr = Program::new(key.clone(), deps, live.clone(), on_stop).start();
        programs.insert(key, (generation, addr.clone(), live.clone()));
        (addr, live)
    }

    /// Starts recording a group's program (or one participant of it) -> the new recording.
    pub async fn start_recording(
        &self,
        group: &GroupId,
        by: &UserId,
        kind: RecordingKind,
        participant: Option<UserId>,
    ) -> Result<Recording, VodError> {
        let active = self
            .recording_now(group)
            .await?
            .into_iter()
            .find(|r| r.participant == participant && r.kind == kind);
        if let Some(r) = active {
            return Err(VodError::Conflict(format!(
                "group {group} is already being recorded (recording {})",
                r.id
            )));
        }
        let rec = Recording {
            id: format!("rec_{}", random_id()),
            group: group.clone(),
            kind,
            status: RecordingStatus::Recording,
            started_at: OffsetDateTime::now_utc(),
            ended_at: None,
            duration_s: 0.0,
            error: None,
            created_by: by.clone(),
            participant: participant.clone(),
            poster: false,
        };
        self.save(rec.clone()).await?;
        let (program, _) = self.program(ProgramKey {
            group: group.clone(),
            participant,
        });
        program
            .send(Record(rec.id.clone()))
            .await
            .map_err(|_| VodError::Conflict("the recorder stopped; try again".into()))?;
        tracing::info!(recording = %rec.id, %group, "recording started");
        Ok(rec)
    }

    /// Stops a recording: its last segments are spooled, then it is `ready` once uploaded.
    pub async fn stop_recording(&self, rid: &str) -> Result<Recording, VodError> {
        let mut rec = self.get(rid).await?;
        if rec.status != RecordingStatus::Recording {
            return Err(VodError::Conflict(format!("recording {rid} is not recording")));
        }
        let key = ProgramKey {
            group: rec.group.clone(),
            participant: rec.participant.clone(),
        };
        let program = self
            .inner
            .programs
            .lock()
            .ok()
            .and_then(|p| p.get(&key).map(|e| e.1.clone()));
        if let Some(program) = program {
            let _ = program.send(StopRecording(rid.to_owned())).await;
        }
        rec.ended_at = Some(OffsetDateTime::now_utc());
        let vod = self.clone();
        let rec = tokio::task::spawn_blocking(move || vod.finish_when_uploaded(rec))
            .await
            .map_err(blocking_err)??;
        tracing::info!(recording = %rid, status = ?rec.status, "recording stopped");
        Ok(recordings::with_duration(self.inner.db.as_ref(), rec))
    }

    /// Marks `rec` ready now if all its segments are uploaded, else `processing` until they are.
    fn finish_when_uploaded(&self, mut rec: Recording) -> Result<Recording, VodError> {
        let prefix = format!("recordings/{}/", rec.id);
        if self.inner.store.pending(&prefix) == 0 {
            rec.status = RecordingStatus::Ready;
            recordings::save(self.inner.db.as_ref(), &rec)?;
            return Ok(rec);
        }
        rec.status = RecordingStatus::Processing;
        recordings::save(self.inner.db.as_ref(), &rec)?;
        let (vod, mut later) = (self.clone(), rec.clone());
        self.inner.rt.spawn(async move {
            while vod.inner.store.pending(&prefix) > 0 {
                vod.inner.store.wait_uploaded(Duration::from_secs(1)).await;
            }
            let db = vod.inner.db.clone();
            let _ = tokio::task::spawn_blocking(move || {
                // Keep fields another writer may have set meanwhile (the poster).
                if let Ok(Some(now)) = recordings::load(db.as_ref(), &later.id) {
                    if now.status != RecordingStatus::Processing {
                        return;
                    }
                    later.poster = now.poster;
                }
                later.status = RecordingStatus::Ready;
                let _ = recordings::save(db.as_ref(), &later);
            })
            .await;
        });
        Ok(rec)
    }

    async fn save(&self, rec: Recording) -> Result<(), VodError> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || recordings::save(db.as_ref(), &rec))
            .await
            .map_err(blocking_err)?
    }

    /// One recording with its duration so far.
    pub async fn get(&self, rid: &str) -> Result<Recording, VodError> {
        let (db, id) = (self.inner.db.clone(), rid.to_owned());
        tokio::task::spawn_blocking(move || {
            let rec =
                recordings::load(db.as_ref(), &id)?.ok_or_else(|| VodError::NotFound(format!("no recording {id}")))?;
            Ok(recordings::with_duration(db.as_ref(), rec))
        })
        .await
        .map_err(blocking_err)?
    }

    /// A group's recordings still `recording` (records only: no segment index is read).
    pub async fn recording_now(&self, group: &GroupId) -> Result<Vec<Recording>, VodError> {
        let (db, group) = (self.inner.db.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            Ok(recordings::all(db.as_ref())?
                .into_iter()
                .filter(|r| r.group == group && r.status == RecordingStatus::Recording)
                .collect())
        })
        .await
        .map_err(blocking_err)?
    }

    /// A group's recordings and uploads, oldest first.
    pub async fn list(&self, group: &GroupId) -> Result<Vec<Recording>, VodError> {
        let (db, group) = (self.inner.db.clone(), group.clone());
        tokio::task::spawn_blocking(move || {
            let mut out: Vec<Recording> = recordings::all(db.as_ref())?
                .into_iter()
                .filter(|r| r.group == group)
                .map(|r| recordings::with_duration(db.as_ref(), r))
                .collect();
            out.sort_by_key(|r| r.started_at);
            Ok(out)
        })
        .await
        .map_err(blocking_err)?
    }

    /// Deletes a recording: stops it, removes its objects, index rows and record.
    pub async fn delete(&self, rid: &str) -> Result<(), VodError> {
        let rec = self.get(rid).await?;
        if rec.status == RecordingStatus::Recording {
            self.stop_recording(rid).await?;
        }
        self.inner.store.delete_prefix(&format!("recordings/{rid}/")).await?;
        let (db, id) = (self.inner.db.clone(), rid.to_owned());
        tokio::task::spawn_blocking(move || {
            db.delete_docs(recordings::SEGMENTS, &format!("{id}/"))?;
            db.delete_docs(recordings::RECORDINGS, &id)?;
            Ok::<_, VodError>(())
        })
        .await
        .map_err(blocking_err)??;
        Ok(())
    }

    /// The recording's HLS playlist with signed segment links.
    pub async fn playlist(&self, rec: &Recording) -> Result<String, VodError> {
        let (db, id) = (self.inner.db.clone(), rec.id.clone());
        let rows: Vec<SegmentRow> = tokio::task::spawn_blocking(move || recordings::segments(db.as_ref(), &id))
            .await
            .map_err(blocking_err)??;
        recordings::playlist(rec, &rows, &self.inner.signer)
    }

    /// Checks a signed link to something of recording `rid`.
    pub fn check_recording_link(&self, rid: &str, exp: u64, sig: &str) -> Result<(), VodError> {
        self.inner
            .signer
            .verify(&recordings::link_path(rid), exp, sig)
            .map_err(link_error)
    }

    /// The bytes of segment `seq` of `rid` (link already checked).
    pub async fn segment(&self, rid: &str, seq: u64) -> Result<Bytes, VodError> {
        self.inner
            .store
            .get(&recordings::segment_key(rid, seq))
            .await?
            .ok_or_else(|| VodError::NotFound(format!("recording {rid} has no segment {seq}")))
    }

    /// The recording's poster (JPEG).
    pub async fn poster(&self, rid: &str) -> Result<Bytes, VodError> {
        self.inner
            .store
            .get(&recordings::poster_key(rid))
            .await?
            .ok_or_else(|| VodError::NotFound(format!("recording {rid} has no poster")))
    }

    /// A signed query string for the poster of `rid` (for the recordings list).
    pub fn poster_query(&self, rid: &str) -> String {
        self.inner.signer.query(&recordings::link_path(rid))
    }

    /// The live LL-HLS playlist of `group` (starts its program if needed; blocking reload
    /// with `msn`/`part`).
    pub async fn live_playlist(
        &self,
        group: &GroupId,
        msn: Option<u64>,
        part: Option<u32>,
    ) -> Result<String, VodError> {
        let (program, live) = self.program(ProgramKey {
            group: group.clone(),
            participant: None,
        });
        program.do_send(Touch);
        let query = self.inner.signer.query(&format!("live/{group}"));
        live.playlist(msn, part, &query).await.map_err(|e| match e {
            LiveError::Timeout => VodError::NotFound(format!("group {group} has no live media (nobody is publishing)")),
            LiveError::BadRequest => VodError::BadMedia("_HLS_msn is too far ahead of the live edge".into()),
            LiveError::Gone => VodError::NotFound("that part of the live stream is gone".into()),
        })
    }

    /// A live segment or part of `group`, checked against its signed link.
    pub async fn live_chunk(&self, group: &GroupId, chunk: Chunk, exp: u64, sig: &str) -> Result<Bytes, VodError> {
        self.inner
            .signer
            .verify(&format!("live/{group}"), exp, sig)
            .map_err(link_error)?;
        let live = self
            .inner
            .programs
            .lock()
            .ok()
            .and_then(|p| {
                p.get(&ProgramKey {
                    group: group.clone(),
                    participant: None,
                })
                .map(|e| (e.1.clone(), e.2.clone()))
            })
            .ok_or_else(|| VodError::NotFound(format!("group {group} has no live stream")))?;
        live.0.do_send(Touch);
        live.1.chunk(chunk).await.map_err(|e| match e {
            LiveError::Timeout => VodError::NotFound("the live stream produced nothing in time".into()),
            _ => VodError::NotFound("that part of the live stream is gone".into()),
        })
    }

    /// Makes `user` the group's program (`None`: the first publisher again).
    pub fn pin(&self, group: &GroupId, user: Option<UserId>) {
        let (program, _) = self.program(ProgramKey {
            group: group.clone(),
            participant: None,
        });
        program.do_send(Pin(user));
        program.do_send(Touch);
    }

    /// Registers an upload whose bytes are in `file` and converts it in the background.
    pub async fn upload(&self, group: &GroupId, by: &UserId, file: PathBuf) -> Result<Recording, VodError> {
        let rec = Recording {
            id: format!("up_{}", random_id()),
            group: group.clone(),
            kind: RecordingKind::Upload,
            status: RecordingStatus::Processing,
            started_at: OffsetDateTime::now_utc(),
            ended_at: None,
            duration_s: 0.0,
            error: None,
            created_by: by.clone(),
            participant: None,
            poster: false,
        };
        self.save(rec.clone()).await?;
        let (vod, job) = (self.clone(), rec.clone());
        tokio::task::spawn_blocking(move || {
            let result = vod.convert(&job.id, &file);
            let _ = std::fs::remove_file(&file);
            let db = vod.inner.db.as_ref();
            let Ok(Some(mut now)) = recordings::load(db, &job.id) else {
                return; // deleted meanwhile
            };
            now.ended_at = Some(OffsetDateTime::now_utc());
            match result {
                Ok(poster) => {
                    now.poster = poster;
                    tracing::info!(upload = %now.id, "upload converted");
                    let _ = vod.finish_when_uploaded(now);
                }
                Err(e) => {
                    tracing::info!(upload = %now.id, "upload failed: {e}");
                    now.status = RecordingStatus::Failed;
                    now.error = Some(match e {
                        VodError::BadMedia(m) | VodError::Unsupported(m) => m,
                        other => other.to_string(),
                    });
                    let _ = recordings::save(db, &now);
                }
            }
        });
        Ok(rec)
    }

    /// Converts an uploaded file into segments of `rid`; returns whether a poster was stored.
    fn convert(&self, rid: &str, file: &Path) -> Result<bool, VodError> {
        let store = &self.inner.store;
        let mut seq = 0u64;
        let mut on_event = |ev: SegmentEvent| -> Result<(), VodError> {
            if let SegmentEvent::Segment(seg) = ev {
                let row = SegmentRow {
                    seq,
                    duration: seg.duration,
                    discontinuity: seq > 0 && seg.discontinuity,
                    bytes: seg.len as u64,
                };
                store.put(
                    &recordings::segment_key(rid, seq),
                    &seg.data(),
                    Some(row.index_row(rid)),
                )?;
                seq += 1;
            }
            Ok(())
        };
        let info = crate::upload::convert_file(file, self.inner.config.segmenting, &mut on_event)?;
        if seq == 0 {
            return Err(VodError::BadMedia("the file has no playable media".into()));
        }
        let poster = match info.poster {
            Some(jpeg) => store.put(&recordings::poster_key(rid), &jpeg, None).is_ok(),
            None => false,
        };
        Ok(poster)
    }

    /// Checks the object store (for `/readyz`).
    pub async fn check(&self) -> Result<(), VodError> {
        let store = self.inner.store.clone();
        self.inner
            .rt
            .spawn(async move { store.check().await })
            .await
            .map_err(blocking_err)?
    }
}

/// 16 random hex digits.
fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
