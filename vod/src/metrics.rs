//! The HLS side's Prometheus instruments.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Counters the segmenter workers and the uploader update.
#[derive(Clone)]
pub struct VodMetrics {
    /// Segments produced by program workers.
    pub segments: IntCounter,
    /// Delay between a live part's last frame reaching the segmenter and the part being
    /// servable (the live HLS latency the server adds).
    pub part_delay: Histogram,
    /// Programs (live HLS or recording pipelines) running.
    pub programs: IntGauge,
    /// Objects waiting in the spool for the object store.
    pub spooled: IntGauge,
    /// Upload attempts to the object store that failed (retried).
    pub upload_failures: IntCounter,
    /// Objects uploaded.
    pub uploads: IntCounter,
}

impl VodMetrics {
    /// Creates the instruments and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<VodMetrics, prometheus::Error> {
        let m = VodMetrics {
            segments: IntCounter::new("fanfare_hls_segments_total", "HLS segments produced")?,
            part_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "fanfare_hls_part_delay_seconds",
                    "From a live part's last frame to the part being servable",
                )
                .buckets(vec![
                    0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0,
                ]),
            )?,
            programs: IntGauge::new("fanfare_hls_programs", "Running program pipelines")?,
            spooled: IntGauge::new("fanfare_hls_spooled_objects", "Objects waiting for the object store")?,
            upload_failures: IntCounter::new(
                "fanfare_hls_upload_failures_total",
                "Failed object store uploads (retried)",
            )?,
            uploads: IntCounter::new("fanfare_hls_uploads_total", "Objects uploaded to the object store")?,
        };
        registry.register(Box::new(m.segments.clone()))?;
        registry.register(Box::new(m.part_delay.clone()))?;
        registry.register(Box::new(m.programs.clone()))?;
        registry.register(Box::new(m.spooled.clone()))?;
        registry.register(Box::new(m.upload_failures.clone()))?;
        registry.register(Box::new(m.uploads.clone()))?;
        Ok(m)
    }

    /// Instruments registered nowhere (unit tests, tools).
    pub fn unregistered() -> VodMetrics {
        // Registering into a throwaway registry cannot collide.
        match VodMetrics::new(&Registry::new()) {
            Ok(m) => m,
            Err(e) => unreachable!("fresh registry refused instruments: {e}"),
        }
    }
}
