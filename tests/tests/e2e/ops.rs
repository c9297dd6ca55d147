//! Operations endpoints: health, readiness, metrics, OpenAPI, the web app root.

use fanfare_tests::Server;
use reqwest::Method;

#[tokio::test]
async fn health_ready_metrics_openapi() {
    let s = Server::start().await;
    let (st, body) = s.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ok")));
    let (st, body) = s.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("ready")));
    let (st, doc) = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(st, 200);
    for path in [
        "/v1/groups",
        "/v1/groups/{gid}/members/{uid}",
        "/v1/groups/{gid}/messages",
        "/v1/tokens",
        "/v1/rtc",
        "/v1/rtc/config",
        "/v1/whip",
        "/v1/groups/{gid}/whep",
        "/v1/sessions/{sid}",
        "/v1/sessions/{sid}/groups",
        "/v1/groups/{gid}/call",
        "/v1/groups/{gid}/call/participants/{uid}/mute",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lists {path}");
    }
    // A request is counted in the latency histogram, labelled by route.
    let count = s
        .metric("fanfare_http_request_duration_seconds_count{method=\"GET\",route=\"/readyz\",status=\"200\"}")
        .await;
    assert!(count >= 1.0);
    assert_eq!(s.metric("fanfare_rooms").await, 0.0);
    assert_eq!(s.metric("fanfare_connections").await, 0.0);
    // Clients learn the ICE servers to use (none configured here).
    let t = s.token("u").await;
    let (st, cfg) = s.call(Method::GET, "/v1/rtc/config", Some(&t), None).await;
    assert_eq!((st, cfg["ice_servers"].as_array().map(Vec::len)), (200, Some(0)));
}
