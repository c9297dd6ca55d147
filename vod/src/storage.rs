//! Where segments go: the object store (a local directory by default, S3-compatible by config),
//! reached through a local spool. Every object is first written to `spool/` and made durable,
//! then uploaded by one worker in the order it was written; only after an upload succeeds is
//! its index row written to the database and the spool file removed. A store that is down
//! holds the queue (retried with backoff), nothing is lost, and a restart resumes from the spool.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engine::store::Store;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::VodError;

/// Which object store holds the segments.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ObjectStoreConfig {
    /// A directory (default: `<data_dir>/objects`).
    #[default]
    Local,
    /// An S3-compatible service (AWS, MinIO, moto...).
    S3 {
        bucket: String,
        /// e.g. `http://127.0.0.1:9000` for MinIO; unset for AWS.
        endpoint: Option<String>,
        #[serde(default = "default_region")]
        region: String,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        /// Path-style requests (`endpoint/bucket/key`), which MinIO and moto need.
        #[serde(default = "yes")]
        path_style: bool,
        /// Allow `http://` endpoints.
        #[serde(default)]
        allow_http: bool,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

/// Builds the object store `config` names; `data_dir` hosts the local one.
pub fn open_object_store(config: &ObjectStoreConfig, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, VodError> {
    match config {
        ObjectStoreConfig::Local => {
            let dir = data_dir.join("objects");
            std::fs::create_dir_all(&dir)?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| VodError::ObjectStore(e.to_string()))?;
            Ok(Arc::new(fs))
        }
        ObjectStoreConfig::S3 {
            bucket,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            path_style,
            allow_http,
        } => {
            // Our own worker retries forever in order; the client only retries briefly.
            let retry = RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
                ..Default::default()
            };
            let options = ClientOptions::new()
                .with_timeout(Duration::from_secs(30))
                .with_connect_timeout(Duration::from_secs(3))
                .with_allow_http(*allow_http);
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_virtual_hosted_style_request(!path_style)
                .with_allow_http(*allow_http)
                .with_retry(retry)
                .with_client_options(options);
            if let Some(e) = endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(k) = access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = secret_access_key {
                b = b.with_secret_access_key(s);
            }
            let s3 = b.build().map_err(|e| VodError::ObjectStore(e.to_string()))?;
            Ok(Arc::new(s3))
        }
    }
}

/// A document row written once its object is uploaded (the index entry of a segment).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IndexRow {
    pub table: String,
    pub key: String,
    pub value: serde_json::Value,
}

/// What a spool entry records beside its bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SpoolMeta {
    object: String,
    row: Option<IndexRow>,
}

/// One pending upload.
#[derive(Clone, Debug)]
struct Job {
    /// Spool file stem: `spool/<n>.bin` and `spool/<n>.json`.
    n: u64,
    meta: SpoolMeta,
}

/// The object store behind its spool; cheap to clone.
#[derive(Clone)]
pub struct SegmentStore {
    inner: Arc<Inner>,
}

struct Inner {
    objects: Arc<dyn ObjectStore>,
    db: Arc<dyn Store>,
    spool: PathBuf,
    next: AtomicU64,
    queue: Mutex<VecDeque<Job>>,
    /// Objects still in the spool: object key -> spool number (served from there meanwhile).
    pending: Mutex<HashMap<String, u64>>,
    wake: Notify,
    metrics: crate::metrics::VodMetrics,
    /// Whether the last upload attempt failed (for `/readyz` and logs).
    store_down: AtomicBool,
    uploaded: Notify,
}

impl SegmentStore {
    /// Opens the spool under `data_dir/spool`, queues what a previous run left there, and
    /// starts the upload worker on the current tokio runtime.
    pub fn start(
        objects: Arc<dyn ObjectStore>,
        db: Arc<dyn Store>,
        data_dir: &Path,
        metrics: crate::metrics::VodMetrics,
    ) -> Result<SegmentStore, VodError> {
        let spool = data_dir.join("spool");
        std::fs::create_dir_all(&spool)?;
        let mut left: Vec<Job> = Vec::new();
        for entry in std::fs::read_dir(&spool)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(n) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<SpoolMeta>(&b).ok())
            {
                Some(meta) if spool.join(format!("{n}.bin")).exists() => left.push(Job { n, meta }),
                _ => {
                    tracing::warn!(file = %path.display(), "dropping an unreadable spool entry");
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(spool.join(format!("{n}.bin")));
                }
            }
        }
        left.sort_by_key(|j| j.n);
        if !left.is_empty() {
            tracing::info!(count = left.len(), "uploading segments spooled by a previous run");
        }
        let next = left.last().map(|j| j.n + 1).unwrap_or(0);
        let pending = left.iter().map(|j| (j.meta.object.clone(), j.n)).collect();
        metrics.spooled.set(left.len() as i64);
        let inner = Arc::new(Inner {
            objects,
            db,
            spool,
            next: AtomicU64::new(next),
            queue: Mutex::new(left.into()),
            pending: Mutex::new(pending),
            wake: Notify::new(),
            metrics,
            store_down: AtomicBool::new(false),
            uploaded: Notify::new(),
        });
        tokio::spawn(upload_worker(inner.clone()));
        Ok(SegmentStore { inner })
    }

    /// Spools `data` for `object` (durable when this returns) and queues its upload; `row` is
    /// written to the database after the upload. Blocking file I/O: call from a blocking thread.
    pub fn put(&self, object: &str, data: &[u8], row: Option<IndexRow>) -> Result<(), VodError> {
        let inner = &self.inner;
        let n = inner.next.fetch_add(1, Ordering::Relaxed);
        let meta = SpoolMeta {
            object: object.to_owned(),
            row,
        };
        write_durably(&inner.spool.join(format!("{n}.bin")), data)?;
        let json = serde_json::to_vec(&meta).map_err(|e| VodError::Io(std::io::Error::other(e)))?;
        write_durably(&inner.spool.join(format!("{n}.json")), &json)?;
        if let Ok(mut p) = inner.pending.lock() {
            p.insert(object.to_owned(), n);
        }
        if let Ok(mut q) = inner.queue.lock() {
            q.push_back(Job { n, meta });
            inner.metrics.spooled.set(q.len() as i64);
        }
        inner.wake.notify_one();
        Ok(())
    }

    /// Reads an object, from the spool if it is not uploaded yet.
    pub async fn get(&self, object: &str) -> Result<Option<Bytes>, VodError> {
        let spooled = self.inner.pending.lock().ok().and_then(|p| p.get(object).copied());
        if let Some(n) = spooled {
            match tokio::fs::read(self.inner.spool.join(format!("{n}.bin"))).await {
                Ok(b) => return Ok(Some(Bytes::from(b))),
                // Uploaded in the meantime: read it from the store.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.inner.objects.get(&ObjectPath::from(object)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| VodError::ObjectStore(e.to_string()))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(VodError::ObjectStore(e.to_string())),
        }
    }

    /// Deletes every object under `prefix` (pending uploads under it are dropped first).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, VodError> {
        let dropped: Vec<u64> = {
            let mut q = self.inner.queue.lock().map_err(|_| poisoned())?;
            let (gone, kept): (Vec<Job>, Vec<Job>) = q.drain(..).partition(|j| j.meta.object.starts_with(prefix));
            q.extend(kept);
            gone.into_iter().map(|j| j.n).collect()
        };
        for n in dropped {
            self.inner.forget(n);
        }
        if let Ok(mut p) = self.inner.pending.lock() {
            p.retain(|k, _| !k.starts_with(prefix));
        }
        use futures_util::StreamExt;
        let path = ObjectPath::from(prefix.trim_end_matches('/'));
        let mut listing = self.inner.objects.list(Some(&path));
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            match meta {
                Ok(meta) => keys.push(meta.location),
                // Nothing was ever stored under the prefix.
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(VodError::ObjectStore(e.to_string())),
            }
        }
        for k in &keys {
            match self.inner.objects.delete(k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(VodError::ObjectStore(e.to_string())),
            }
        }
        Ok(keys.len())
    }

    /// Objects waiting in the spool whose key starts with `prefix`.
    pub fn pending(&self, prefix: &str) -> usize {
        self.inner
            .pending
            .lock()
            .map(|p| p.keys().filter(|k| k.starts_with(prefix)).count())
            .unwrap_or(0)
    }

    /// Waits until the next upload completes (or `timeout`).
    pub async fn wait_uploaded(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.inner.uploaded.notified()).await;
    }

    /// Whether the object store answered the last upload attempt.
    pub fn reachable(&self) -> bool {
        !self.inner.store_down.load(Ordering::Relaxed)
    }

    /// Checks that the object store answers (for `/readyz`).
    pub async fn check(&self) -> Result<(), VodError> {
        match self.inner.objects.head(&ObjectPath::from("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(VodError::ObjectStore(e.to_string())),
        }
    }
}

impl Inner {
    fn forget(&self, n: u64) {
        let _ = std::fs::remove_file(self.spool.join(format!("{n}.json")));
        let _ = std::fs::remove_file(self.spool.join(format!("{n}.bin")));
    }

    /// Uploads one job and writes its row. Errors leave the job at the head of the queue.
    async fn upload(&self, job: &Job) -> Result<(), VodError> {
        let data = tokio::fs::read(self.spool.join(format!("{}.bin", job.n))).await?;
        self.objects
            .put(&ObjectPath::from(job.meta.object.as_str()), Bytes::from(data).into())
            .await
            .map_err(|e| VodError::ObjectStore(e.to_string()))?;
        if let Some(row) = &job.meta.row {
            let value = serde_json::to_vec(&row.value).map_err(|e| VodError::Io(std::io::Error::other(e)))?;
            let db = self.db.clone();
            let (table, key) = (row.table.clone(), row.key.clone());
            tokio::task::spawn_blocking(move || db.put_doc(&table, &key, &value))
                .await
                .map_err(|e| VodError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }
}

fn poisoned() -> VodError {
    VodError::Io(std::io::Error::other("spool queue lock poisoned"))
}

/// The upload worker: strictly in order, retrying the head of the queue with backoff.
async fn upload_worker(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let head = inner.queue.lock().ok().and_then(|q| q.front().cloned());
        let Some(job) = head else {
            inner.wake.notified().await;
            continue;
        };
        match inner.upload(&job).await {
            Ok(()) => {
                if inner.store_down.swap(false, Ordering::Relaxed) {
                    tracing::info!("object store reachable again; uploading the spool");
                }
                backoff = Duration::from_millis(250);
                if let Ok(mut q) = inner.queue.lock() {
                    if q.front().is_some_and(|j| j.n == job.n) {
                        q.pop_front();
                    }
                    inner.metrics.spooled.set(q.len() as i64);
                }
                inner.metrics.uploads.inc();
                if let Ok(mut p) = inner.pending.lock() {
                    if p.get(&job.meta.object) == Some(&job.n) {
                        p.remove(&job.meta.object);
                    }
                }
                inner.forget(job.n);
                inner.uploaded.notify_waiters();
            }
            Err(e) => {
                inner.metrics.upload_failures.inc();
                if !inner.store_down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(object = %job.meta.object, "upload failed, keeping segments in the spool: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes `data` to `path` through a temporary file and fsync, so a crash leaves either the
/// whole file or none.
fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}
