//! The engine's Prometheus instruments, registered once into the server's registry.

use prometheus::{IntCounter, IntGauge, Registry};

/// Counters and gauges the actors update.
#[derive(Clone)]
pub struct EngineMetrics {
    /// Open realtime (WebSocket) connections.
    pub connections: IntGauge,
    /// Active room actors.
    pub rooms: IntGauge,
    /// Chat messages accepted.
    pub messages: IntCounter,
    /// Chat message deliveries to connections.
    pub deliveries: IntCounter,
    /// Deliveries dropped because a connection's outbox was full (the connection is closed).
    pub dropped: IntCounter,
    /// Room actors restarted after a panic.
    pub room_restarts: IntCounter,
}

impl EngineMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = EngineMetrics {
            connections: IntGauge::new("fanfare_connections", "Open realtime WebSocket connections")?,
            rooms: IntGauge::new("fanfare_rooms", "Active room actors")?,
            messages: IntCounter::new("fanfare_messages_total", "Chat messages accepted")?,
            deliveries: IntCounter::new(
                "fanfare_message_deliveries_total",
                "Chat messages delivered to connections",
            )?,
            dropped: IntCounter::new(
                "fanfare_message_drops_total",
                "Deliveries dropped because a connection could not keep up",
            )?,
            room_restarts: IntCounter::new("fanfare_room_restarts_total", "Room actors restarted after a panic")?,
        };
        registry.register(Box::new(m.connections.clone()))?;
        registry.register(Box::new(m.rooms.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.deliveries.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.room_restarts.clone()))?;
        Ok(m)
    }

    /// Instruments registered nowhere, for unit tests.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("fresh registry accepts every instrument")
    }
}
