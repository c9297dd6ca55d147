//! The outbound queue of one realtime connection. Rooms serialise an event once and push the
//! shared text into every recipient's outbox without an actor hop. The queue is bounded: a
//! connection that cannot keep up is closed (and counted) rather than slowing the room.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

/// Default capacity of a connection's outbox, in messages.
pub const OUTBOX_CAPACITY: usize = 512;

/// The sending side, cloned into every room the connection joins.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Arc<str>>,
    kill: Arc<Notify>,
    /// Set once the queue overflowed: later pushes are refused quietly.
    overflowed: Arc<AtomicBool>,
}

/// The receiving side, owned by the socket writer.
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Arc<str>>,
    kill: Arc<Notify>,
}

/// What [`Outbox::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the socket.
    Queued,
    /// The queue was full: the connection is being closed.
    Overflowed,
    /// The connection is already gone.
    Closed,
}

impl Outbox {
    /// A new outbox pair holding up to `capacity` messages.
    pub fn channel(capacity: usize) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let kill = Arc::new(Notify::new());
        let outbox = Outbox {
            tx,
            kill: kill.clone(),
            overflowed: Arc::new(AtomicBool::new(false)),
        };
        (outbox, OutboxReceiver { rx, kill })
    }

    /// Queues `text` without waiting. On overflow the connection is told to close.
    /// Only the first overflow reports `Overflowed`; after it every push is `Closed`.
    pub fn push(&self, text: Arc<str>) -> Pushed {
        if self.overflowed.load(Ordering::Relaxed) {
            return Pushed::Closed;
        }
        match self.tx.try_send(text) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Relaxed);
                self.close();
                Pushed::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Asks the socket writer to close the connection.
    pub fn close(&self) {
        self.kill.notify_one();
    }
}

impl OutboxReceiver {
    /// The next message to write, or `None` once the connection must close.
    pub async fn recv(&mut self) -> Option<Arc<str>> {
        tokio::select! {
            biased;
            _ = self.kill.notified() => None,
            m = self.rx.recv() => m,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_once_and_then_refuses_quietly() {
        let (outbox, mut rx) = Outbox::channel(2);
        assert_eq!(outbox.push("a".into()), Pushed::Queued);
        assert_eq!(outbox.push("b".into()), Pushed::Queued);
        assert_eq!(outbox.push("c".into()), Pushed::Overflowed);
        assert_eq!(outbox.push("d".into()), Pushed::Closed);
        // The writer is told to close before it drains what was queued.
        assert_eq!(rx.recv().await, None);
    }
}
