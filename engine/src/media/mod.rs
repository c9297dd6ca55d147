//! The WebRTC media plane's base: a dedicated multi-thread tokio runtime for the `webrtc`
//! crate (whose drivers spawn with `tokio::spawn`, which on an actix worker would land on a
//! single-thread runtime), the ICE address settings (a socket per connection, or the shared
//! port of [`udp_mux`]), and peer-connection construction.

mod bwe;
mod estimate;
mod nack_history;
mod peer;
mod probe;
mod rtcp_forward;
mod runtime;
mod sdp;
mod send_batch;
mod tcp_mux;
mod udp_mux;
mod viewer_peer;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

pub use estimate::SendSideEstimate;
pub use peer::{check_offer, measure_rtt, reanswer, sending_track_ids, OfferInfo, Peer, PeerState, MAX_SDP_BYTES};
pub use sdp::{advertise_public_ip, cap_video_bitrate, extension_id, offers_codec, rewrite_candidates};
pub use viewer_peer::{Feedback, ViewerPeer, ViewerTrack, Written};

use webrtc::runtime::Runtime;

use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use runtime::PeerRuntime;
use send_batch::Outbox;
use tcp_mux::TcpMux;
use udp_mux::UdpMux;

/// Locks `m`; a panic elsewhere while it was held leaves the data usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where WebRTC binds and what it advertises.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaConfig {
    /// Addresses ICE gathers on and advertises, one UDP socket each per peer connection (or
    /// one shared socket each, with `udp_port`).
    pub ips: Vec<IpAddr>,
    /// Inclusive UDP port range for peer connections; `None` lets the OS pick.
    pub ports: Option<(u16, u16)>,
    /// One UDP port shared by every peer connection (ICE UDP mux); excludes `ports`.
    pub udp_port: Option<u16>,
    /// One TCP port where every peer connection accepts ICE-TCP (passive candidates), for
    /// clients whose network blocks UDP.
    pub tcp_port: Option<u16>,
    /// Worker threads of the media runtime; by default one per CPU the process may run on (its
    /// affinity mask and CPU quota), at most 64.
    pub threads: usize,
    /// The address clients reach the server at when it sits behind a 1:1 NAT; replaces the
    /// bound addresses in the candidates the server advertises.
    pub public_ip: Option<IpAddr>,
    /// Answer as an ICE-lite agent (RFC 8445 section 2.7: host candidates only, no checks of
    /// our own; the client drives connectivity).
    pub ice_lite: bool,
    /// Number what viewers are sent with transport-wide sequence numbers and estimate their
    /// bandwidth from their clients' TWCC feedback.
    pub bandwidth_estimation: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            ports: None,
            udp_port: None,
            tcp_port: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(64)),
            public_ip: None,
            ice_lite: false,
            bandwidth_estimation: true,
        }
    }
}

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The media runtime's handle, once [`Media::start`] has run. Consumers of a track's packets
/// (taps) run here, beside the tasks that produce them, so a packet wakes no other thread.
pub fn runtime_handle() -> Option<tokio::runtime::Handle> {
    RUNTIME.get().map(|rt| rt.handle().clone())
}

/// Handle to the media plane, cheap to clone.
#[derive(Clone)]
pub struct Media {
    config: Arc<MediaConfig>,
    handle: tokio::runtime::Handle,
    next_port: Arc<AtomicU32>,
    mux: Option<Arc<UdpMux>>,
    tcp_mux: Option<Arc<TcpMux>>,
    outbox: Arc<Outbox>,
}

/// What a new peer connection is built with.
pub(crate) struct Transport {
    pub runtime: Arc<dyn Runtime>,
    pub udp_addrs: Vec<String>,
    /// Where the connection listens for ICE-TCP (placeholders for the shared TCP port).
    pub tcp_addrs: Vec<String>,
    /// Local ICE credentials, set when the connection is on a shared port (routed by ufrag).
    pub credentials: Option<(String, String)>,
}

impl Media {
    /// Starts the media runtime (once per process) with `config`, and binds the shared UDP
    /// and ICE-TCP ports when `config.udp_port` / `config.tcp_port` are set (their drop
    /// counters go to `metrics`).
    pub fn start(config: MediaConfig, metrics: &EngineMetrics) -> Result<Media, EngineError> {
        if config.ips.is_empty() {
            return Err(EngineError::Invalid("rtc.ips must list at least one address".into()));
        }
        if config.udp_port.is_some() && config.ports.is_some() {
            return Err(EngineError::Invalid(
                "rtc.udp_port and rtc.port_min/port_max exclude each other".into(),
            ));
        }
        let threads = config.threads.max(1);
        let rt = match RUNTIME.get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .thread_name("media")
                    .enable_all()
                    .build()
                    .map_err(|e| EngineError::Media(format!("cannot start the media runtime: {e}")))?;
                RUNTIME.get_or_init(|| rt)
            }
        };
        let outbox = Outbox::start(rt.handle(), metrics);
        let mux = match config.udp_port {
            Some(port) => Some(Arc::new(UdpMux::bind(
                &config.ips,
                port,
                rt.handle(),
                &outbox,
                metrics,
            )?)),
            None => None,
        };
        let tcp_mux = match config.tcp_port {
            Some(port) => Some(Arc::new(TcpMux::bind(&config.ips, port, rt.handle(), metrics)?)),
            None => None,
        };
        Ok(Media {
            config: Arc::new(config),
            handle: rt.handle().clone(),
            next_port: Arc::new(AtomicU32::new(0)),
            mux,
            tcp_mux,
            outbox,
        })
    }

    /// Runs `fut` on the media runtime and waits for it from any executor.
    pub async fn run<F, T>(&self, fut: F) -> Result<T, EngineError>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .map_err(|e| EngineError::Media(format!("media task failed: {e}")))
    }

    /// Spawns `fut` on the media runtime.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }

    /// Whether peer connections run ICE-lite.
    fn ice_lite(&self) -> bool {
        self.config.ice_lite
    }

    fn bandwidth_estimation(&self) -> bool {
        self.config.bandwidth_estimation
    }

    /// The runtime, addresses and ICE credentials of a new peer connection. On a shared port
    /// the connection binds throwaway ephemeral sockets (the driver insists on binding) that
    /// its runtime swaps for virtual ones, routed by the connection's random ICE ufrag.
    pub(crate) fn transport(&self) -> Transport {
        let credentials = (self.mux.is_some() || self.tcp_mux.is_some()).then(udp_mux::ice_credentials);
        let ufrag = credentials.as_ref().map(|(ufrag, _)| ufrag.clone()).unwrap_or_default();
        let seat = self.mux.as_ref().map(|mux| mux.seat(ufrag.clone()));
        let tcp = self.tcp_mux.as_ref().map(|mux| mux.seat(ufrag));
        Transport {
            runtime: Arc::new(PeerRuntime::new(self.outbox.clone(), seat, tcp)),
            udp_addrs: if self.mux.is_some() {
                self.addrs_on(0)
            } else {
                self.bind_addrs()
            },
            tcp_addrs: if self.tcp_mux.is_some() {
                self.addrs_on(0)
            } else {
                Vec::new()
            },
            credentials,
        }
    }

    /// The addresses a new peer connection binds: one per configured IP, on the next port of
    /// the range (or an OS-chosen one).
    fn bind_addrs(&self) -> Vec<String> {
        let port = match self.config.ports {
            None => 0,
            Some((lo, hi)) => {
                let span = u32::from(hi - lo) + 1;
                lo + (self.next_port.fetch_add(1, Ordering::Relaxed) % span) as u16
            }
        };
        self.addrs_on(port)
    }

    fn addrs_on(&self, port: u16) -> Vec<String> {
        self.config
            .ips
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, port).to_string())
            .collect()
    }

    /// The SDP the server sends, with candidates rewritten to the public address if one is set
    /// and to the shared UDP and TCP ports if there are.
    pub fn advertise(&self, sdp: String) -> String {
        let port = self.mux.as_ref().and(self.config.udp_port);
        let tcp_port = self.tcp_mux.as_ref().and(self.config.tcp_port);
        if self.config.public_ip.is_none() && port.is_none() && tcp_port.is_none() {
            return sdp;
        }
        rewrite_candidates(&sdp, &self.config.ips, self.config.public_ip, port, tcp_port)
    }

    /// How many attempts to build a peer connection: a port range retries on the next port,
    /// the shared port with fresh ICE credentials (a ufrag collision, however unlikely).
    fn bind_attempts(&self) -> usize {
        match self.config.ports {
            _ if self.mux.is_some() => 2,
            Some((lo, hi)) => (usize::from(hi - lo) + 1).min(64),
            None if self.tcp_mux.is_some() => 2,
            None => 1,
        }
    }
}
