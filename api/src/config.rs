//! Server configuration: built-in defaults, then the TOML file, then `FANFARE_*` environment
//! variables, then command-line flags, each overriding the one before. Unknown keys are errors,
//! and everything is validated once at start with a message that names the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration mistake, reported at start.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Everything the server reads at start. See `assets/fanfare.example.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server binds (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Where the database, generated credentials and local media live.
    pub data_dir: PathBuf,
    /// Where the web app is served from.
    pub assets_dir: PathBuf,
    /// The API key (the `iss` of every token). Generated into `data_dir` when unset.
    pub api_key: Option<String>,
    /// The HMAC secret tokens are signed with. Generated into `data_dir` when unset.
    pub api_secret: Option<String>,
    pub log: LogConfig,
    pub limits: Limits,
    pub rtc: RtcConfig,
    pub testing: Testing,
    pub web: WebConfig,
    /// Where recordings' segments are stored.
    pub storage: vod::storage::ObjectStoreConfig,
    pub hls: HlsConfig,
    /// RTSP camera ingest.
    pub ingest: ingest::IngestConfig,
}

/// HLS: segmenting, signed links, uploads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Target segment duration in seconds (segments are cut on keyframes).
    pub segment_s: f64,
    /// Target duration of a low-latency part, in milliseconds.
    pub part_ms: u64,
    /// How long signed segment links in playlists stay valid (e.g. "10m").
    pub link_ttl: String,
    /// Largest upload accepted by `POST /v1/groups/{gid}/media`, in bytes.
    pub max_upload_bytes: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_s: 1.0,
            part_ms: 200,
            link_ttl: "10m".into(),
            max_upload_bytes: 2 << 30,
        }
    }
}

/// The web app served from `assets_dir`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Enables `POST /v1/dev/token` (anyone gets a 24 h user token for any user id: for trying
    /// the web app on one machine). Unset: on when `listen` is a loopback address.
    pub dev_tokens: Option<bool>,
}

impl Config {
    /// Whether `POST /v1/dev/token` answers: `web.dev_tokens`, or, unset, a loopback `listen`.
    pub fn dev_tokens(&self) -> bool {
        self.web
            .dev_tokens
            .unwrap_or_else(|| self.listen_addr().map(|a| a.ip().is_loopback()).unwrap_or(false))
    }
}

/// WebRTC media settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtcConfig {
    /// Addresses WebRTC gathers and advertises ICE candidates on (a list, or one
    /// comma-separated string as in `FANFARE_RTC_IPS`).
    #[serde(deserialize_with = "ip_list")]
    pub ips: Vec<IpAddr>,
    /// Lowest UDP port for peer connections (set with `port_max`; unset: the OS picks).
    pub port_min: Option<u16>,
    /// Highest UDP port for peer connections.
    pub port_max: Option<u16>,
    /// One UDP port for every peer connection (ICE UDP mux, demultiplexed by remote address
    /// and ICE ufrag); excludes `port_min`/`port_max`. Unset: a socket per connection.
    pub udp_port: Option<u16>,
    /// One TCP port where every peer connection accepts ICE-TCP (RFC 6544 passive candidates,
    /// demultiplexed by ICE ufrag): the fallback for clients whose network blocks UDP. Unset:
    /// no TCP candidates.
    pub tcp_port: Option<u16>,
    /// Threads of the media runtime; by default one per CPU the process may run on (its
    /// affinity mask and CPU quota, as `taskset` or a container limit set them), at most 64.
    pub threads: usize,
    /// Video re-encodes (scaled layers for capped viewers, H.265 cameras' H.264 companions)
    /// running at once, at most; 0: none (capped viewers get the lowest layer as sent, viewers
    /// without H.265 no video of an H.265 camera). By default one per media thread.
    pub max_reencodes: Option<usize>,
    /// Behind a 1:1 NAT: the public address advertised in place of `ips` in ICE candidates.
    pub public_ip: Option<IpAddr>,
    /// Answer as an ICE-lite agent: the client drives connectivity checks (see README).
    pub ice_lite: bool,
    /// Estimate each viewer's bandwidth from its client's TWCC feedback (see README); off:
    /// only receiver reports and REMB move viewers between layers.
    pub bandwidth_estimation: bool,
    /// STUN/TURN servers handed to clients by `GET /v1/rtc/config` (the server itself uses none).
    pub ice_servers: Vec<IceServer>,
}

/// A STUN or TURN server for clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:...`.
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl Default for RtcConfig {
    fn default() -> Self {
        RtcConfig {
            ips: vec![IpAddr::from([127, 0, 0, 1])],
            port_min: None,
            port_max: None,
            udp_port: None,
            tcp_port: None,
            threads: engine::media::MediaConfig::default().threads,
            max_reencodes: None,
            public_ip: None,
            ice_lite: false,
            bandwidth_estimation: true,
            ice_servers: Vec::new(),
        }
    }
}

/// Reads `["a", "b"]` or `"a,b"` as a list of IP addresses.
fn ip_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
        Raw::Many(v) => v,
    };
    items
        .iter()
        .map(|s| {
            s.parse::<IpAddr>()
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an IP address")))
        })
        .collect()
}

/// Logging.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter such as `info` or `fanfare=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Input limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest JSON request body, in bytes (larger bodies get 413).
    pub max_json_bytes: usize,
    /// Largest `limit` a paged list accepts.
    pub max_page: usize,
    /// Largest WebSocket frame, in bytes.
    pub max_ws_frame_bytes: usize,
}

/// Switches for the test suite; never turn these on in production.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Testing {
    /// Enables `POST /v1/debug/groups/{gid}/room/crash` (admin only).
    pub fault_injection: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "./data".into(),
            assets_dir: "./assets".into(),
            api_key: None,
            api_secret: None,
            log: LogConfig::default(),
            limits: Limits::default(),
            rtc: RtcConfig::default(),
            testing: Testing::default(),
            web: WebConfig::default(),
            storage: Default::default(),
            hls: HlsConfig::default(),
            ingest: ingest::IngestConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_json_bytes: 64 * 1024,
            max_page: 1000,
            max_ws_frame_bytes: 64 * 1024,
        }
    }
}

/// Values given on the command line (only those set override).
#[derive(Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

/// The environment variables read, and the key each one sets.
const ENV_KEYS: &[(&str, &str)] = &[
    ("LISTEN", "listen"),
    ("DATA_DIR", "data_dir"),
    ("ASSETS_DIR", "assets_dir"),
    ("API_KEY", "api_key"),
    ("API_SECRET", "api_secret"),
    ("LOG", "log.level"),
    ("LOG_FORMAT", "log.format"),
    ("RTC_IPS", "rtc.ips"),
    ("RTC_UDP_PORT", "rtc.udp_port"),
    ("RTC_TCP_PORT", "rtc.tcp_port"),
];

impl Config {
    /// Loads and validates the configuration. `file` is the `--config` path; without it,
    /// `./fanfare.toml` is read when present.
    pub fn load(file: Option<&Path>, cli: CliOverrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    message: format!("file {} does not exist", path.display()),
                })
            }
            Some(path) => fig = fig.merge(Toml::file_exact(path)),
            None => fig = fig.merge(Toml::file("fanfare.toml")),
        }
        let env = Env::prefixed("FANFARE_")
            .filter_map(|k| {
                ENV_KEYS
                    .iter()
                    .find(|(var, _)| k.as_str().eq_ignore_ascii_case(var))
                    .map(|(_, key)| (*key).into())
            })
            .split(".")
            .lowercase(false);
        fig = fig.merge(env).merge(Serialized::defaults(cli));
        let mut config: Config = fig.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        // An empty value (e.g. `FANFARE_API_KEY=` from a compose file) means unset.
        config.api_key = config.api_key.filter(|k| !k.is_empty());
        config.api_secret = config.api_secret.filter(|s| !s.is_empty());
        config.validate()?;
        Ok(config)
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            message: format!(
                "{:?} is not an address like 127.0.0.1:8080 (port 0 to 65535)",
                self.listen
            ),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        match (&self.api_key, &self.api_secret) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "api_key",
                    message: "set both api_key and api_secret, or neither (then they are generated)".into(),
                })
            }
            (Some(key), Some(secret)) => {
                if key.is_empty() || key.len() > 128 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(ConfigError::Invalid {
                        key: "api_key",
                        message: "must be 1 to 128 characters without spaces".into(),
                    });
                }
                if secret.len() < 32 {
                    return Err(ConfigError::Invalid {
                        key: "api_secret",
                        message: "must be at least 32 characters".into(),
                    });
                }
            }
            (None, None) => {}
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                message: format!(
                    "{:?} is not a log filter such as `info` or `fanfare=debug`",
                    self.log.level
                ),
            });
        }
        let l = &self.limits;
        for (key, value, max) in [
            ("limits.max_json_bytes", l.max_json_bytes, 16 << 20),
            ("limits.max_page", l.max_page, 100_000),
            ("limits.max_ws_frame_bytes", l.max_ws_frame_bytes, 16 << 20),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("must be between 1 and {max}, got {value}"),
                });
            }
        }
        let rtc = &self.rtc;
        if rtc.ips.is_empty() {
            return Err(ConfigError::Invalid {
                key: "rtc.ips",
                message: "list at least one address".into(),
            });
        }
        if rtc.ips.iter().any(|ip| ip.is_unspecified()) {
            return Err(ConfigError::Invalid {
                key: "rtc.ips",
                message: "use concrete addresses (0.0.0.0 and :: skip loopback and advertise nothing useful)".into(),
            });
        }
        match (rtc.port_min, rtc.port_max) {
            (None, None) => {}
            (Some(lo), Some(hi)) if lo > 0 && lo <= hi => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "rtc.port_min",
                    message: "set rtc.port_min and rtc.port_max together, 1 <= port_min <= port_max".into(),
                })
            }
        }
        match rtc.udp_port {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "rtc.udp_port",
                    message: "must be a port from 1 to 65535".into(),
                })
            }
            Some(_) if rtc.port_min.is_some() || rtc.port_max.is_some() => {
                return Err(ConfigError::Invalid {
                    key: "rtc.udp_port",
                    message: "set either rtc.udp_port (one port shared by all peer connections) or \
                              rtc.port_min/port_max (a port per connection), not both"
                        .into(),
                })
            }
            _ => {}
        }
        if rtc.tcp_port == Some(0) {
            return Err(ConfigError::Invalid {
                key: "rtc.tcp_port",
                message: "must be a port from 1 to 65535".into(),
            });
        }
        for server in &rtc.ice_servers {
            let ok = !server.urls.is_empty()
                && server
                    .urls
                    .iter()
                    .all(|u| ["stun:", "stuns:", "turn:", "turns:"].iter().any(|p| u.starts_with(p)));
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "rtc.ice_servers",
                    message: "each server needs urls starting with stun:, stuns:, turn: or turns:".into(),
                });
            }
            if server.urls.iter().any(|u| u.starts_with("turn"))
                && (server.username.is_none() || server.credential.is_none())
            {
                return Err(ConfigError::Invalid {
                    key: "rtc.ice_servers",
                    message: "a TURN server needs username and credential".into(),
                });
            }
        }
        if rtc.threads == 0 || rtc.threads > 64 {
            return Err(ConfigError::Invalid {
                key: "rtc.threads",
                message: "must be between 1 and 64".into(),
            });
        }
        if rtc.max_reencodes.is_some_and(|n| n > 1024) {
            return Err(ConfigError::Invalid {
                key: "rtc.max_reencodes",
                message: "must be between 0 and 1024".into(),
            });
        }
        if let Err((key, message)) = self.ingest.validate() {
            return Err(ConfigError::Invalid { key, message });
        }
        check_writable_dir(&self.data_dir)
    }

    /// The HLS side's settings (`secret`: the API secret, which signs links).
    pub fn vod(&self, secret: &str) -> Result<vod::VodConfig, ConfigError> {
        let h = &self.hls;
        if !(0.2..=30.0).contains(&h.segment_s) {
            return Err(ConfigError::Invalid {
                key: "hls.segment_s",
                message: "must be between 0.2 and 30 seconds".into(),
            });
        }
        if !(50..=5000).contains(&h.part_ms) || h.part_ms as f64 / 1000.0 > h.segment_s {
            return Err(ConfigError::Invalid {
                key: "hls.part_ms",
                message: "must be between 50 and 5000 ms and not longer than a segment".into(),
            });
        }
        let link_ttl = humantime::parse_duration(&h.link_ttl).map_err(|e| ConfigError::Invalid {
            key: "hls.link_ttl",
            message: format!("not a duration like \"10m\": {e}"),
        })?;
        Ok(vod::VodConfig {
            data_dir: self.data_dir.clone(),
            object_store: self.storage.clone(),
            link_ttl,
            segmenting: vod::segment::SegmenterConfig {
                target: std::time::Duration::from_secs_f64(h.segment_s),
                part: std::time::Duration::from_millis(h.part_ms),
            },
            secret: secret.to_owned(),
        })
    }

    /// The media plane's settings.
    pub fn media(&self) -> engine::media::MediaConfig {
        engine::media::MediaConfig {
            ips: self.rtc.ips.clone(),
            ports: self.rtc.port_min.zip(self.rtc.port_max),
            udp_port: self.rtc.udp_port,
            tcp_port: self.rtc.tcp_port,
            threads: self.rtc.threads,
            public_ip: self.rtc.public_ip,
            ice_lite: self.rtc.ice_lite,
            bandwidth_estimation: self.rtc.bandwidth_estimation,
        }
    }
}

/// Creates `dir` if needed and proves it is writable.
fn check_writable_dir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |e: std::io::Error| ConfigError::Invalid {
        key: "data_dir",
        message: format!("{} is not a writable directory: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, format!("data_dir = {:?}\n{toml}", dir.path().join("d"))).unwrap();
        Config::load(Some(&path), CliOverrides::default())
    }

    #[test]
    fn example_file_is_valid_and_matches_defaults() {
        let example = include_str!("../../assets/fanfare.example.toml");
        let c = load_str(&example.replace("data_dir = \"./data\"", "")).unwrap();
        let d = Config::default();
        assert_eq!(
            (c.listen, c.limits.max_json_bytes, c.log.level),
            (d.listen, d.limits.max_json_bytes, d.log.level)
        );
    }

    #[test]
    fn defaults_load() {
        let c = load_str("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.limits.max_page, 1000);
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = load_str("bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = load_str("[limits]\nmax_pages = 3").unwrap_err().to_string();
        assert!(e.contains("max_pages"), "{e}");
        let e = load_str("listen = \"127.0.0.1:99999\"").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = load_str("api_key = \"k\"").unwrap_err().to_string();
        assert!(e.contains("api_key"), "{e}");
        let e = load_str("[log]\nformat = \"xml\"").unwrap_err().to_string();
        assert!(e.contains("xml"), "{e}");
    }

    #[test]
    fn rtc_ips_take_a_list_or_a_comma_string() {
        assert_eq!(
            load_str("[rtc]\nips = [\"127.0.0.1\", \"::1\"]").unwrap().rtc.ips.len(),
            2
        );
        assert_eq!(
            load_str("[rtc]\nips = \"127.0.0.1, 127.0.0.2\"").unwrap().rtc.ips.len(),
            2
        );
        let e = load_str("[rtc]\nips = \"nope\"").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = load_str("[rtc]\nport_min = 5000").unwrap_err().to_string();
        assert!(e.contains("rtc.port_min"), "{e}");
        let e = load_str("[[rtc.ice_servers]]\nurls = [\"turn:t.example:3478\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtc.ice_servers"), "{e}");
        let c = load_str("public_ip = 1\n").unwrap_err().to_string();
        assert!(c.contains("public_ip"), "{c}");
    }

    #[test]
    fn rtc_udp_port_is_one_port_and_excludes_the_range() {
        let c = load_str("[rtc]\nudp_port = 7882").unwrap();
        assert_eq!(c.rtc.udp_port, Some(7882));
        assert_eq!(c.media().udp_port, Some(7882));
        assert_eq!(load_str("").unwrap().media().udp_port, None, "off by default");
        let e = load_str("[rtc]\nudp_port = 7882\nport_min = 40000\nport_max = 40999")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rtc.udp_port") && e.contains("not both"), "{e}");
        let e = load_str("[rtc]\nudp_port = 0").unwrap_err().to_string();
        assert!(e.contains("rtc.udp_port"), "{e}");
        let e = load_str("[rtc]\nudp_port = 70000").unwrap_err().to_string();
        assert!(e.contains("udp_port"), "{e}");
    }

    #[test]
    fn rtc_tcp_port_is_one_port() {
        let c = load_str("[rtc]\ntcp_port = 7881\nudp_port = 7882").unwrap();
        assert_eq!((c.media().tcp_port, c.media().udp_port), (Some(7881), Some(7882)));
        assert_eq!(load_str("").unwrap().media().tcp_port, None, "off by default");
        let e = load_str("[rtc]\ntcp_port = 0").unwrap_err().to_string();
        assert!(e.contains("rtc.tcp_port"), "{e}");
    }

    #[test]
    fn dev_tokens_default_to_loopback_listen() {
        assert!(load_str("").unwrap().dev_tokens());
        assert!(!load_str("listen = \"0.0.0.0:8080\"").unwrap().dev_tokens());
        assert!(load_str("listen = \"0.0.0.0:8080\"\n[web]\ndev_tokens = true")
            .unwrap()
            .dev_tokens());
        assert!(!load_str("[web]\ndev_tokens = false").unwrap().dev_tokens());
        let e = load_str("[web]\ndev_token = true").unwrap_err().to_string();
        assert!(e.contains("dev_token"), "{e}");
    }

    #[test]
    fn unwritable_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let path = dir.path().join("f.toml");
        std::fs::write(&path, format!("data_dir = {:?}", file.join("sub"))).unwrap();
        let e = Config::load(Some(&path), CliOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("data_dir"), "{e}");
    }
}
