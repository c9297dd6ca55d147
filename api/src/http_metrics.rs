//! HTTP request latency histogram, labelled by method, route pattern and status.

use prometheus::{HistogramOpts, HistogramVec, Registry};

/// The histogram, registered once.
#[derive(Clone)]
pub struct HttpMetrics {
    pub latency: HistogramVec,
}

impl HttpMetrics {
    /// Creates and registers the histogram.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = HistogramVec::new(
            HistogramOpts::new("fanfare_http_request_duration_seconds", "HTTP request latency").buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["method", "route", "status"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        Ok(HttpMetrics { latency })
    }
}
