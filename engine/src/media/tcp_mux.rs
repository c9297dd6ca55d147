//! One TCP port for ICE-TCP (RFC 6544, passive candidates; `[rtc] tcp_port`): the fallback for
//! clients whose network blocks UDP.
//!
//! The server listens on the port once per rtc address. A client opens a connection and sends
//! its first ICE connectivity check, framed as RFC 4571 says (a 16-bit length, then the STUN
//! message); the USERNAME of that Binding request starts with the ufrag of one of our peer
//! connections, which gets the connection, the first frame included. Anything else (no frame
//! within [`FIRST_FRAME_WAIT`], not a Binding request, an unknown ufrag) is closed and counted
//! (`fanfare_rtc_mux_dropped_total{reason="tcp_unknown"}`).
//!
//! A peer connection is plugged in through its runtime ([`super::runtime`]): the listener its
//! driver binds (on an ephemeral port) is swapped for a [`VirtualListener`] fed by the shared
//! one, and [`super::Media::advertise`] rewrites the passive TCP candidates to the shared port.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntCounter;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

use super::lock;
use super::udp_mux::stun::binding_request_ufrag;
use crate::error::EngineError;
use crate::metrics::EngineMetrics;

/// How long a new connection has to send its first check.
pub(crate) const FIRST_FRAME_WAIT: Duration = Duration::from_secs(5);
/// Connections handed to one peer connection and not yet accepted by its driver.
const QUEUE: usize = 16;
/// Peer connections registered on one shared listener at most.
const MAX_PEERS: usize = 16_384;
/// Connections not yet routed (reading their first frame) at most, per shared listener; more
/// are closed at once, so a flood of idle connections cannot hold memory or descriptors.
const MAX_PENDING: usize = 256;
/// A first frame longer than this is not an ICE check (a Binding request is a few hundred bytes).
const MAX_FIRST_FRAME: usize = 2048;

/// An accepted connection on its way to a peer connection, with what was read of it.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    first: Vec<u8>,
}

/// One shared listener and the peer connections it serves, by ICE ufrag.
struct SharedListener {
    local: SocketAddr,
    routes: Mutex<HashMap<String, (u64, mpsc::Sender<Accepted>)>>,
    next_id: AtomicU64,
    dropped: IntCounter,
}

/// The shared TCP listeners, one per rtc address; their accept tasks stop when this is dropped.
pub(crate) struct TcpMux {
    listeners: Vec<Arc<SharedListener>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TcpMux {
    /// Listens on `port` of every address of `ips`, accepting on `handle`.
    pub(crate) fn bind(
        ips: &[IpAddr],
        port: u16,
        handle: &tokio::runtime::Handle,
        metrics: &EngineMetrics,
    ) -> Result<TcpMux, EngineError> {
        let mut listeners = Vec::new();
        let mut tasks = Vec::new();
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            let bound = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(|l| {
                    let _entered = handle.enter();
                    tokio::net::TcpListener::from_std(l)
                })
                .map_err(|e| EngineError::Media(format!("cannot listen on rtc.tcp_port {addr}: {e}")))?;
            let shared = Arc::new(SharedListener {
                local: bound.local_addr().unwrap_or(addr),
                routes: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                dropped: metrics.rtc_mux_dropped.with_label_values(&["tcp_unknown"]),
            });
            tasks.push(handle.spawn(accept_loop(bound, shared.clone())));
            listeners.push(shared);
        }
        Ok(TcpMux { listeners, tasks })
    }

    /// The place of one peer connection whose local ICE ufrag is `ufrag`.
    pub(crate) fn seat(&self, ufrag: String) -> TcpSeat {
        TcpSeat {
            listeners: self.listeners.clone(),
            ufrag,
        }
    }

    /// The shared listeners' addresses.
    #[cfg(test)]
    fn addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }
}

impl Drop for TcpMux {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for TcpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.listeners.iter().map(|l| l.local).collect();
        f.debug_struct("TcpMux").field("addrs", &addrs).finish()
    }
}

/// Accepts connections and routes each by its first frame; runs until the mux is dropped.
async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<SharedListener>) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    shared.dropped.inc();
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    if !route(stream, peer, &shared).await {
                        shared.dropped.inc();
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(addr = %shared.local, "ICE-TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the first RFC 4571 frame of `stream` and hands the connection to the peer connection
/// its Binding request names; `false` when it names none (the connection is closed).
async fn route(mut stream: tokio::net::TcpStream, peer: SocketAddr, shared: &SharedListener) -> bool {
    let read_first = async {
        let len = usize::from(stream.read_u16().await?);
        if len > MAX_FIRST_FRAME {
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        let mut first = vec![0u8; 2 + len];
        first[..2].copy_from_slice(&(len as u16).to_be_bytes());
        stream.read_exact(&mut first[2..]).await?;
        Ok::<_, io::Error>(first)
    };
    let Ok(Ok(first)) = tokio::time::timeout(FIRST_FRAME_WAIT, read_first).await else {
        return false;
    };
    let Some(ufrag) = first.get(2..).and_then(binding_request_ufrag) else {
        return false;
    };
    let tx = match lock(&shared.routes).get(ufrag) {
        Some((_, tx)) => tx.clone(),
        None => {
            tracing::debug!(%peer, ufrag, "ICE-TCP connection for an unknown ufrag");
            return false;
        }
    };
    tracing::debug!(%peer, ufrag, "ICE-TCP connection routed");
    tx.try_send(Accepted { stream, peer, first }).is_ok()
}

/// One peer connection's place on the shared listeners.
pub(crate) struct TcpSeat {
    listeners: Vec<Arc<SharedListener>>,
    ufrag: String,
}

impl std::fmt::Debug for TcpSeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSeat").field("ufrag", &self.ufrag).finish()
    }
}

impl TcpSeat {
    /// A virtual listener on the shared listener of `listener`'s address, dropping the one the
    /// driver bound; `Err(listener)` back when there is no shared listener on that address.
    pub(crate) fn attach(
        &self,
        listener: std::net::TcpListener,
    ) -> Result<io::Result<VirtualListener>, std::net::TcpListener> {
        let local = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => return Ok(Err(e)),
        };
        let Some(shared) = self.listeners.iter().find(|l| l.local.ip() == local.ip()) else {
            return Err(listener);
        };
        drop(listener);
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut routes = lock(&shared.routes);
        if routes.len() >= MAX_PEERS && !routes.contains_key(&self.ufrag) {
            return Ok(Err(io::Error::other("too many peer connections on the ICE-TCP port")));
        }
        // An ICE restart of the same connection keeps its ufrag and replaces its listener.
        routes.insert(self.ufrag.clone(), (id, tx));
        Ok(Ok(VirtualListener {
            shared: shared.clone(),
            id,
            ufrag: self.ufrag.clone(),
            // The address the driver named its candidate after.
            local,
            rx: tokio::sync::Mutex::new(rx),
        }))
    }
}

/// A peer connection's view of a shared listener: the connections routed to it.
pub(crate) struct VirtualListener {
    shared: Arc<SharedListener>,
    id: u64,
    ufrag: String,
    local: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
}

impl std::fmt::Debug for VirtualListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualListener")
            .field("shared", &self.shared.local)
            .finish()
    }
}

impl Drop for VirtualListener {
    fn drop(&mut self) {
        let mut routes = lock(&self.shared.routes);
        if routes.get(&self.ufrag).is_some_and(|(id, _)| *id == self.id) {
            routes.remove(&self.ufrag);
        }
    }
}

impl AsyncTcpListener for VirtualListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>> {
        Box::pin(async move {
            let accepted = self
                .rx
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "the ICE-TCP port is closed"))?;
            let peer = accepted.peer;
            let stream = Stream::new(accepted, self.shared.local)?;
            Ok((Arc::new(stream) as Arc<dyn AsyncTcpStream>, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A routed connection: the first frame, already read, comes out of `read` first.
#[derive(Debug)]
struct Stream {
    read_half: tokio::net::tcp::OwnedReadHalf,
    write_half: tokio::net::tcp::OwnedWriteHalf,
    first: Mutex<Option<Vec<u8>>>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Stream {
    fn new(accepted: Accepted, local: SocketAddr) -> io::Result<Stream> {
        accepted.stream.set_nodelay(true)?;
        let (read_half, write_half) = accepted.stream.into_split();
        Ok(Stream {
            read_half,
            write_half,
            first: Mutex::new(Some(accepted.first)),
            local,
            peer: accepted.peer,
        })
    }

    /// Copies what is left of the first frame into `buf`; `None` once it is all read.
    fn take_first(&self, buf: &mut [u8]) -> Option<usize> {
        let mut first = lock(&self.first);
        let pending = first.as_mut()?;
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        pending.drain(..n);
        if pending.is_empty() {
            *first = None;
        }
        Some(n)
    }
}

impl AsyncTcpStream for Stream {
    fn read<'a, 'b>(&'a self, buf: &'b mut [u8]) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            if let Some(n) = self.take_first(buf) {
                return Ok(n);
            }
            loop {
                self.read_half.readable().await?;
                match self.read_half.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        })
    }

    fn write_all<'a, 'b>(&'a self, buf: &'b [u8]) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let mut rest = buf;
            while !rest.is_empty() {
                self.write_half.writable().await?;
                match self.write_half.try_write(rest) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A Binding request whose USERNAME is `username`, RFC 4571 framed.
    fn framed_request(username: &[u8]) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&0x0006u16.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&0x0001u16.to_be_bytes());
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&0x2112_A442u32.to_be_bytes());
        msg.extend_from_slice(&[7u8; 12]);
        msg.extend_from_slice(&attr);
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        framed
    }

    #[tokio::test]
    async fn connections_reach_the_peer_their_first_check_names_and_others_are_closed() {
        let metrics = EngineMetrics::unregistered();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mux = TcpMux::bind(&[ip], 0, &tokio::runtime::Handle::current(), &metrics).unwrap();
        let shared = mux.addrs()[0];
        let placeholder = std::net::TcpListener::bind((ip, 0)).unwrap();
        let placeholder_addr = placeholder.local_addr().unwrap();
        let listener = mux.seat("ufragtcp".into()).attach(placeholder).unwrap().unwrap();
        assert_eq!(listener.local_addr().unwrap(), placeholder_addr);

        // A client whose check names us: the server side reads the check, then what follows.
        let mut client = tokio::net::TcpStream::connect(shared).await.unwrap();
        let check = framed_request(b"ufragtcp:them");
        client.write_all(&check).await.unwrap();
        client.write_all(b"\x00\x03abc").await.unwrap();
        let (stream, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("accepted in time")
            .unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        while got.len() < check.len() + 5 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[..check.len()], &check[..]);
        assert_eq!(&got[check.len()..], b"\x00\x03abc");
        stream.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");

        // Unknown ufrag, garbage, and a frame cut short: closed and counted.
        let dropped = metrics.rtc_mux_dropped.with_label_values(&["tcp_unknown"]);
        for bytes in [
            framed_request(b"nobody:them"),
            b"\x00\x10GET / HTTP/1.1\r\n\r\n".to_vec(),
            b"\xff\xff".to_vec(),
            b"\x05".to_vec(),
        ] {
            let mut other = tokio::net::TcpStream::connect(shared).await.unwrap();
            other.write_all(&bytes).await.unwrap();
            if bytes.len() == 1 {
                other.shutdown().await.unwrap();
            }
            let mut sink = [0u8; 8];
            let closed = tokio::time::timeout(Duration::from_secs(2), other.read(&mut sink)).await;
            assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dropped.get(), 4);

        // Dropping the listener unregisters it.
        drop(listener);
        let mut late = tokio::net::TcpStream::connect(shared).await.unwrap();
        late.write_all(&check).await.unwrap();
        let mut sink = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), late.read(&mut sink)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
}
