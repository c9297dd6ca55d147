//! Starts the server: opens storage, starts the registry actor on its own arbiter, serves HTTP
//! until SIGTERM/SIGINT, then flushes storage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Arbiter};
use actix_web::dev::Service;
use actix_web::middleware::ErrorHandlers;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use engine::ids::UserId;
use engine::metrics::EngineMetrics;
use engine::registry::Registry;
use engine::store::{SledStore, Store};
use futures_util::FutureExt;

use crate::config::Config;
use crate::credentials::{self, Origin};
use crate::error::{ensure_json_error, json_error, query_error};
use crate::http_metrics::HttpMetrics;
use crate::state::AppState;
use crate::tokens::{TokenCodec, ADMIN_SUBJECT};

/// Runs the server until it is told to stop.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (creds, origin) = credentials::load_or_generate(&config)?;
    let tokens = Arc::new(TokenCodec::new(&creds));
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.data_dir.join("db"))?);
    let prometheus = prometheus::Registry::new();
    let metrics = EngineMetrics::new(&prometheus)?;
    let http_metrics = HttpMetrics::new(&prometheus)?;

    let actors = Arbiter::new();
    let (s, m) = (store.clone(), metrics.clone());
    let registry = Registry::start_in_arbiter(&actors.handle(), move |_| Registry::new(s, m));

    let media = engine::media::Media::start(config.media(), &metrics)?;
    // Publishers whose audio carries no level are measured by decoding it (FFmpeg, in vod).
    engine::track::audio_level::install_meters(vod::level_meter::rtp_meter);
    engine::track::scaled::install_scalers(vod::scale::scaler_for);
    engine::track::scaled::set_limit(config.rtc.max_reencodes.unwrap_or(config.rtc.threads));
    let listen = config.listen_addr()?;
    let rtc = engine::session::SessionDeps {
        store: store.clone(),
        media,
        registry: registry.clone(),
        sessions: Default::default(),
        metrics: metrics.clone(),
    };
    let vod_metrics = vod::metrics::VodMetrics::new(&prometheus)?;
    let vod = vod::Vod::start(
        config.vod(&creds.api_secret)?,
        store.clone(),
        registry.clone(),
        vod_metrics,
    )?;
    let auto_record = vod::auto_record::AutoRecorder::new(vod.clone(), store.clone());
    let auto_record = actix::Actor::start_in_arbiter(&actors.handle(), move |_| auto_record);
    registry.do_send(engine::registry::ObserveCalls(auto_record.clone().recipient()));
    let ingests = ingest::IngestManager::new(ingest::IngestDeps {
        store: store.clone(),
        registry: registry.clone(),
        media: rtc.media.clone(),
        metrics: metrics.clone(),
        arbiter: actors.handle(),
        config: config.ingest.clone(),
    });
    ingests.set_recorder(Arc::new(crate::ingest_recorder::IngestRecordings::new(
        auto_record.clone(),
    )));
    match ingests.boot() {
        Ok(n) if n > 0 => println!("Restarted {n} stored RTSP ingests"),
        Ok(_) => {}
        Err(e) => tracing::error!("cannot load stored ingests: {e}"),
    }
    let state = AppState {
        store: store.clone(),
        registry,
        tokens: tokens.clone(),
        metrics,
        prometheus,
        config: Arc::new(config.clone()),
        rtc,
        vod,
    };
    let assets = config.assets_dir.clone();
    let server = HttpServer::new(move || {
        let hm = http_metrics.clone();
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(ingests.clone()))
            .app_data(
                web::JsonConfig::default()
                    .limit(state.config.limits.max_json_bytes)
                    .error_handler(json_error),
            )
            .app_data(web::QueryConfig::default().error_handler(query_error))
            .app_data(web::PayloadConfig::default().limit(state.config.limits.max_json_bytes))
            .wrap(ErrorHandlers::new().default_handler(ensure_json_error))
            .wrap_fn(move |req, srv| {
                let start = Instant::now();
                let method = req.method().to_string();
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                let hm = hm.clone();
                srv.call(req).map(move |res| {
                    let status = match &res {
                        Ok(r) => r.status().as_u16(),
                        Err(e) => e.as_response_error().status_code().as_u16(),
                    };
                    hm.latency
                        .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
                        .observe(start.elapsed().as_secs_f64());
                    res
                })
            })
            .configure(crate::routes::configure)
            .service(actix_files::Files::new("/", &assets).index_file("index.html"))
    })
    .shutdown_timeout(5)
    .bind(listen)
    .with_context(|| format!("cannot listen on {listen}"))?;

    let addr = server.addrs().first().copied().context("the server bound no address")?;
    let admin = tokens.mint(
        &UserId::new(ADMIN_SUBJECT)?,
        Some("Admin"),
        true,
        Duration::from_secs(24 * 3600),
    )?;
    println!("Fanfare listening on http://{addr}/");
    println!("Web app: http://{addr}/");
    match origin {
        Origin::Generated => println!(
            "API key and secret generated into {}",
            config.data_dir.join("credentials.json").display()
        ),
        Origin::Stored => println!(
            "API key and secret read from {}",
            config.data_dir.join("credentials.json").display()
        ),
        Origin::Config => println!("API key and secret from configuration"),
    }
    println!("API key: {}", creds.api_key);
    println!("Admin token (24 h): {admin}");
    tracing::info!(%addr, "serving");

    let result = server.run().await;
    tracing::info!("shutting down: flushing storage");
    store.flush()?;
    actors.stop();
    result.context("HTTP server failed")
}
