//! Authentication end to end: each way a token can be bad has its own 401 code, tokens forged
//! by a customer backend with the server's secret work, `POST /v1/tokens` is admin-only, the
//! `fanfare token` CLI prints tokens the running server accepts, and configuration mistakes
//! stop `fanfare serve` at once with exit code 2 and a message naming the key.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use fanfare_tests::{fanfare_bin, Server};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

/// Seconds since the Unix epoch.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A JWT with `header` and `claims`, signed HS256 with `secret`.
fn forge_with_header(header: &Value, claims: &Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

/// An HS256 JWT with `claims`, signed with `secret`.
fn forge(claims: &Value, secret: &str) -> String {
    forge_with_header(&json!({"alg": "HS256", "typ": "JWT"}), claims, secret)
}

/// The claims of a JWT (not verified).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload")).expect("JSON claims")
}

/// The server's API key and secret, from `<data_dir>/credentials.json`.
fn credentials(s: &Server) -> (String, String) {
    let text = std::fs::read_to_string(s.data_dir.join("credentials.json")).expect("credentials.json exists");
    let v: Value = serde_json::from_str(&text).expect("credentials are JSON");
    (
        v["api_key"].as_str().expect("api_key").to_string(),
        v["api_secret"].as_str().expect("api_secret").to_string(),
    )
}

/// Asserts a 401 in the error shape, with `code` when given.
#[track_caller]
fn assert_401(case: &str, got: &(u16, Value), code: Option<&str>) {
    let (st, body) = got;
    assert_eq!(*st, 401, "{case}: status (body {body})");
    assert!(
        body["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
            && body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: error shape: {body}"
    );
    if let Some(code) = code {
        assert_eq!(body["error"]["code"], code, "{case}: code (body {body})");
    }
}

/// GET `path` with a raw `Authorization` header value.
async fn get_with_authorization(s: &Server, path: &str, value: &str) -> (u16, Value) {
    let res = s
        .http()
        .get(format!("{}{path}", s.base))
        .header("authorization", value)
        .send()
        .await
        .expect("request reaches the server");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason() {
    let s = Server::start().await;
    let (key, secret) = credentials(&s);
    let other_secret = "another-secret-that-is-long-enough-0123456789";
    let valid = |claims: Value| forge(&claims, &secret);

    // A token forged by a "customer backend" with the real key and secret works, proving the
    // forgery below differs from a good token only in what each case changes.
    let good = valid(json!({"iss": key, "sub": "alice", "name": "Alice", "exp": now() + 600}));
    let (st, body) = s.call(Method::GET, "/v1/groups", Some(&good), None).await;
    assert_eq!(st, 200, "a well-formed token signed with the secret: {body}");
    assert!(body["groups"].is_array(), "{body}");

    let cases: Vec<(&str, String, &str)> = vec![
        ("garbage", "garbage".into(), "token_malformed"),
        ("three garbage parts", "a.b.c".into(), "token_malformed"),
        (
            "another secret",
            forge(&json!({"iss": key, "sub": "alice", "exp": now() + 600}), other_secret),
            "token_bad_signature",
        ),
        (
            "tampered claims",
            {
                let t = good.clone();
                let parts: Vec<&str> = t.split('.').collect();
                let evil = URL_SAFE_NO_PAD
                    .encode(json!({"iss": key, "sub": "mallory", "exp": now() + 600, "admin": true}).to_string());
                format!("{}.{}.{}", parts[0], evil, parts[2])
            },
            "token_bad_signature",
        ),
        (
            "wrong issuer",
            valid(json!({"iss": "not-this-server", "sub": "alice", "exp": now() + 600})),
            "token_wrong_issuer",
        ),
        (
            "expired 2 minutes ago",
            valid(json!({"iss": key, "sub": "alice", "exp": now() - 120})),
            "token_expired",
        ),
        ("no exp", valid(json!({"iss": key, "sub": "alice"})), "token_malformed"),
        (
            "no sub",
            valid(json!({"iss": key, "exp": now() + 600})),
            "token_malformed",
        ),
    ];
    for (case, token, code) in &cases {
        let got = s.call(Method::GET, "/v1/groups", Some(token), None).await;
        assert_401(case, &got, Some(code));
        let got = s
            .call(Method::GET, &format!("/v1/groups?token={token}"), None, None)
            .await;
        assert_401(&format!("{case} (query)"), &got, Some(code));
    }

    // Codes that are the server's own choice: still a 401 in the error shape.
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(json!({"iss": key, "sub": "alice", "exp": now() + 600, "admin": true}).to_string())
    );
    let bad_sub = valid(json!({"iss": key, "sub": "../x", "exp": now() + 600}));
    let hs256_labelled_hs512 = forge_with_header(
        &json!({"alg": "HS512", "typ": "JWT"}),
        &json!({"iss": key, "sub": "alice", "exp": now() + 600}),
        &secret,
    );
    for (case, token) in [
        ("alg none", alg_none.as_str()),
        ("invalid sub", bad_sub.as_str()),
        ("HS256 signature labelled HS512", hs256_labelled_hs512.as_str()),
    ] {
        let got = s.call(Method::GET, "/v1/groups", Some(token), None).await;
        assert_401(case, &got, None);
    }

    // Missing or not a bearer token.
    let got = s.call(Method::GET, "/v1/groups", None, None).await;
    assert_401("no token", &got, Some("token_missing"));
    let got = s.call(Method::GET, "/v1/rtc", None, None).await;
    assert_401("realtime socket without a token", &got, Some("token_missing"));
    let got = s.call(Method::GET, "/v1/rtc?token=garbage", None, None).await;
    assert_401("realtime socket with a garbage token", &got, Some("token_malformed"));
    let got = get_with_authorization(&s, "/v1/groups", "Basic x").await;
    assert_401("Authorization: Basic", &got, None);
    let got = get_with_authorization(&s, "/v1/groups", &format!("Basic {good}")).await;
    assert_401("a good token under Basic", &got, None);
    let got = get_with_authorization(&s, "/v1/groups", "Bearer ").await;
    assert_401("empty bearer token", &got, None);

    // `?token=` works where a header cannot be set, and the token's identity is used.
    let alice = s.token("alice").await;
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"id": "mine", "name": "Mine"})),
        )
        .await;
    assert_eq!(st, 201);
    let (st, body) = s
        .call(Method::GET, &format!("/v1/groups?token={alice}"), None, None)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["groups"][0]["id"], "mine", "{body}");
    assert_eq!(body["groups"][0]["role"], "owner", "{body}");
    let (st, body) = s
        .call(
            Method::GET,
            &format!("/v1/groups/mine/messages?token={alice}&limit=5"),
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test]
async fn token_endpoint_is_admin_only_and_validates_input() {
    let s = Server::start().await;
    let (key, _) = credentials(&s);
    let alice = s.token("alice").await;
    let req = json!({"user": "bob", "name": "Bob", "ttl_s": 600});

    let (st, body) = s.call(Method::POST, "/v1/tokens", None, Some(req.clone())).await;
    assert_401("POST /v1/tokens without a token", &(st, body), Some("token_missing"));
    let (st, body) = s
        .call(Method::POST, "/v1/tokens", Some(&alice), Some(req.clone()))
        .await;
    assert_eq!(st, 403, "a user token may not mint tokens: {body}");
    assert!(body["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{body}");

    let before = now();
    let (st, body) = s.call(Method::POST, "/v1/tokens", Some(&s.admin), Some(req)).await;
    assert_eq!(st, 201, "{body}");
    let bob = body["token"].as_str().expect("token").to_string();
    let claims = claims_of(&bob);
    assert_eq!(claims["iss"], key.as_str());
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["name"], "Bob");
    assert_ne!(claims["admin"], true, "a user token is not an admin token: {claims}");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(
        (before + 600..=now() + 600).contains(&exp),
        "exp is 600 s from now: {claims}"
    );
    let (st, body) = s.call(Method::GET, "/v1/groups", Some(&bob), None).await;
    assert_eq!(st, 200, "the minted token works: {body}");
    let (st, body) = s
        .call(Method::POST, "/v1/tokens", Some(&bob), Some(json!({"user": "eve"})))
        .await;
    assert_eq!(st, 403, "the minted user token is not admin: {body}");

    for (case, body) in [
        ("ttl_s 0", json!({"user": "bob", "ttl_s": 0})),
        ("ttl_s negative", json!({"user": "bob", "ttl_s": -1})),
        ("ttl_s over a year", json!({"user": "bob", "ttl_s": 400 * 24 * 3600})),
        ("ttl_s a string", json!({"user": "bob", "ttl_s": "1h"})),
        ("user ../x", json!({"user": "../x"})),
        ("user empty", json!({"user": ""})),
        ("user with a space", json!({"user": "a b"})),
        ("user 65 characters", json!({"user": "u".repeat(65)})),
        ("no user", json!({"name": "Nobody"})),
        ("name empty", json!({"user": "bob", "name": ""})),
        ("unknown field", json!({"user": "bob", "bogus": true})),
    ] {
        let (st, body) = s.call(Method::POST, "/v1/tokens", Some(&s.admin), Some(body)).await;
        assert_eq!(st, 400, "{case}: {body}");
        assert!(
            body["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                && body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: error shape: {body}"
        );
    }
}

/// What a finished `fanfare` run produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the `fanfare` binary with `args` and only the `FANFARE_*` variables in `env`, in `cwd`;
/// kills it by PID and fails the test if it runs longer than `limit`.
fn run_fanfare(args: &[&OsStr], env: &[(&str, &OsStr)], cwd: &Path, limit: Duration) -> Run {
    let mut cmd = Command::new(fanfare_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FANFARE_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start fanfare");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for fanfare") {
            break Some(st);
        }
        if started.elapsed() > limit {
            let _ = child.kill(); // SIGKILL to this child's PID.
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let Some(status) = status else {
        panic!("fanfare {args:?} still running after {limit:?}; killed it.\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    Run {
        code: status.code(),
        stdout,
        stderr,
        took,
    }
}

#[tokio::test]
async fn cli_tokens_are_accepted_by_the_running_server() {
    let s = Server::start().await;
    let (key, _) = credentials(&s);
    let cwd = tempfile::tempdir().expect("temp dir");
    let env: [(&str, &OsStr); 2] = [
        ("FANFARE_DATA_DIR", s.data_dir.as_os_str()),
        ("FANFARE_LISTEN", OsStr::new("127.0.0.1:0")),
    ];
    let limit = Duration::from_secs(20);
    let token = |args: &[&str]| {
        let mut all = vec![OsStr::new("token")];
        all.extend(args.iter().map(OsStr::new));
        run_fanfare(&all, &env, cwd.path(), limit)
    };

    let before = now();
    let r = token(&["--user", "alice", "--name", "Alice", "--ttl", "1h"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let alice = r.stdout.trim().to_string();
    assert_eq!(alice.lines().count(), 1, "only the token on stdout: {:?}", r.stdout);
    let claims = claims_of(&alice);
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["name"], "Alice", "{claims}");
    assert_eq!(claims["iss"], key.as_str(), "{claims}");
    assert_ne!(claims["admin"], true, "{claims}");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!((before + 3600..=now() + 3600).contains(&exp), "--ttl 1h: {claims}");
    let (st, body) = s.call(Method::GET, "/v1/groups", Some(&alice), None).await;
    assert_eq!(st, 200, "the running server accepts the CLI's token: {body}");
    let (st, body) = s
        .call(
            Method::POST,
            "/v1/groups",
            Some(&alice),
            Some(json!({"id": "cli", "name": "CLI"})),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["created_by"], "alice", "the token speaks for alice: {body}");
    let (st, body) = s
        .call(Method::POST, "/v1/tokens", Some(&alice), Some(json!({"user": "x"})))
        .await;
    assert_eq!(st, 403, "a --user token is not admin: {body}");

    let r = token(&["--admin"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let admin = r.stdout.trim().to_string();
    assert_eq!(claims_of(&admin)["admin"], true);
    let (st, body) = s
        .call(Method::POST, "/v1/tokens", Some(&admin), Some(json!({"user": "carol"})))
        .await;
    assert_eq!(st, 201, "the CLI's admin token mints tokens: {body}");

    for (case, args, mention) in [
        ("neither --user nor --admin", &[][..], None),
        ("both --user and --admin", &["--user", "alice", "--admin"][..], None),
        ("--ttl soon", &["--user", "alice", "--ttl", "soon"][..], Some("soon")),
        ("--ttl 0", &["--user", "alice", "--ttl", "0"][..], Some("ttl")),
        ("invalid user id", &["--user", "../x"][..], Some("user id")),
    ] {
        let r = token(args);
        assert!(
            r.code.is_some_and(|c| c != 0),
            "{case}: exits non-zero, got {:?}",
            r.code
        );
        assert!(r.stdout.trim().is_empty(), "{case}: prints no token: {:?}", r.stdout);
        assert!(!r.stderr.trim().is_empty(), "{case}: says why on stderr");
        if let Some(m) = mention {
            assert!(r.stderr.contains(m), "{case}: stderr mentions {m:?}: {}", r.stderr);
        }
        assert!(!r.stderr.contains("panicked"), "{case}: no panic: {}", r.stderr);
    }
}

/// One bad configuration: what it is, the config file, the environment, the key the error names.
type ConfigCase<'a> = (&'a str, String, &'a [(&'a str, &'a OsStr)], &'a str);

#[test]
fn config_mistakes_stop_the_server_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, b"not a directory").expect("write file");
    let listen_env = ("FANFARE_LISTEN", OsStr::new("127.0.0.1:0"));
    let cases: [ConfigCase; 4] = [
        (
            "unknown key",
            format!("data_dir = {:?}\nbogus = 1\n", data),
            &[listen_env],
            "bogus",
        ),
        (
            "unknown nested key",
            format!("data_dir = {:?}\n[limits]\nmax_pages = 3\n", data),
            &[listen_env],
            "max_pages",
        ),
        (
            "port out of range",
            format!("data_dir = {:?}\nlisten = \"127.0.0.1:99999\"\n", data),
            &[],
            "listen",
        ),
        (
            "data_dir under a regular file",
            format!("data_dir = {:?}\n", a_file.join("sub")),
            &[listen_env],
            "data_dir",
        ),
    ];
    for (i, (case, toml, env, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&path, toml).expect("write config");
        let args = [OsStr::new("--config"), path.as_os_str(), OsStr::new("serve")];
        let r = run_fanfare(&args, env, dir.path(), Duration::from_secs(15));
        assert_eq!(r.code, Some(2), "{case}: exit code 2; stderr: {}", r.stderr);
        assert!(
            r.took < Duration::from_secs(5),
            "{case}: exits at once, took {:?}",
            r.took
        );
        assert!(r.stderr.contains(key), "{case}: stderr names `{key}`: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{case}: no panic: {}", r.stderr);
        assert!(!r.stdout.contains("listening"), "{case}: never served: {}", r.stdout);
    }
    assert!(!a_file.join("sub").exists() && std::fs::read(&a_file).unwrap() == b"not a directory");
}
