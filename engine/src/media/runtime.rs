//! The `webrtc` runtime of every peer connection: [`TokioRuntime`] (on the media runtime),
//! except for the sockets, which are ours: on the shared UDP port a virtual socket
//! ([`super::udp_mux`]), otherwise the connection's own socket; either way their sends go
//! through the process-wide [`Outbox`], which batches them ([`super::send_batch`]). Its TCP
//! listener is a virtual one on the shared ICE-TCP port ([`super::tcp_mux`]); the server never
//! opens TCP connections itself (active candidates are of no use to clients behind NATs).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime, TokioRuntime,
};

use super::send_batch::{Outbox, OwnSocket};
use super::tcp_mux::TcpSeat;
use super::udp_mux::MuxSeat;

/// One peer connection's runtime.
pub(crate) struct PeerRuntime {
    outbox: Arc<Outbox>,
    /// Its place on the shared UDP port, if there is one.
    seat: Option<MuxSeat>,
    /// Its place on the shared ICE-TCP port, if there is one.
    tcp: Option<TcpSeat>,
}

impl PeerRuntime {
    /// A runtime whose sockets send through `outbox`, on the shared UDP port when `seat` is
    /// set, accepting ICE-TCP on the shared TCP port when `tcp` is.
    pub(crate) fn new(outbox: Arc<Outbox>, seat: Option<MuxSeat>, tcp: Option<TcpSeat>) -> PeerRuntime {
        PeerRuntime { outbox, seat, tcp }
    }
}

impl std::fmt::Debug for PeerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRuntime")
            .field("seat", &self.seat)
            .field("tcp", &self.tcp)
            .finish()
    }
}

impl Runtime for PeerRuntime {
    #[track_caller]
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn_reactor(reactor_pool_size, future)
    }

    /// The shared port's virtual socket for the driver's freshly bound one when there is a
    /// shared socket on its address; otherwise that socket itself, sending through the outbox.
    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let socket = match &self.seat {
            Some(seat) => match seat.attach(socket) {
                Ok(virtual_socket) => return Ok(Arc::new(virtual_socket?)),
                Err(own) => own,
            },
            None => socket,
        };
        Ok(Arc::new(OwnSocket::new(socket, self.outbox.clone())?))
    }

    /// A virtual listener on the shared ICE-TCP port for the one the driver bound.
    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let listener = match &self.tcp {
            Some(seat) => match seat.attach(listener) {
                Ok(virtual_listener) => return Ok(Arc::new(virtual_listener?)),
                Err(own) => own,
            },
            None => listener,
        };
        TokioRuntime.wrap_tcp_listener(listener)
    }

    /// Refused: the server only accepts ICE-TCP.
    fn connect_tcp<'a>(
        &'a self,
        _remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server does not open ICE-TCP connections",
            ))
        })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { TokioRuntime.resolve_host(host).await })
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "fanfare-tokio"
    }
}
