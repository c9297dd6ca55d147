//! The `webrtc` runtime of every peer connection: [`TokioRuntime`] (on the media runtime),
//! except for the UDP sockets, which are ours: on the shared port a virtual socket
//! ([`super::udp_mux`]), otherwise the connection's own socket; either way their sends go
//! through the process-wide [`Outbox`], which batches them ([`super::send_batch`]).

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
use super::udp_mux::MuxSeat;

/// One peer connection's runtime.
pub(crate) struct PeerRuntime {
    outbox: Arc<Outbox>,
    /// Its place on the shared port, if there is one.
    seat: Option<MuxSeat>,
}

impl PeerRuntime {
    /// A runtime whose sockets send through `outbox`, on the shared port when `seat` is set.
    pub(crate) fn new(outbox: Arc<Outbox>, seat: Option<MuxSeat>) -> PeerRuntime {
        PeerRuntime { outbox, seat }
    }
}

impl std::fmt::Debug for PeerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRuntime").field("seat", &self.seat).finish()
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

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        TokioRuntime.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        TokioRuntime.connect_tcp(remote_addr)
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
