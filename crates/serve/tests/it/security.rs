//! Safe by default, against a real server: access tokens, refusal of exposed addresses without
//! them, per-client limits (429 with Retry-After) that do not affect other clients, and CORS only
//! when asked for.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use crate::common::*;

const TOKEN_A: &str = "tok-a-0123456789abcdef";
const TOKEN_B: &str = "tok-b-fedcba9876543210";
const PREDICT: &str = "/v1/models/flowers/predict";

fn token_file(dir: &std::path::Path) -> std::path::PathBuf {
    let f = dir.join("tokens.txt");
    std::fs::write(&f, format!("# service tokens\n{TOKEN_A}\n\n{TOKEN_B}\n")).expect("write tokens");
    f
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn tokens_guard_the_api_and_metrics_but_not_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = token_file(dir.path());
    let srv = TestServer::start(args(|a| a.auth.token_file = Some(tokens)), vec![tiny_backend(dir.path(), "flowers", 1)]);
    let a = srv.addr;
    for path in ["/v1/models", "/v1/models/flowers", "/metrics"] {
        let r = get(a, path);
        assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")), "{path}");
        assert_eq!(r.json()["error"]["code"], "missing_token");
        let wrong = http(a, "GET", path, &[("Authorization", "Bearer tok-a-0123456789abcdeX")], b"");
        assert_eq!((wrong.status, wrong.json()["error"]["code"].as_str()), (401, Some("invalid_token")), "{path}");
        assert_eq!(http(a, "GET", path, &[("Authorization", "Basic dG9rLWE=")], b"").status, 401);
        assert_eq!(http(a, "GET", path, &[("Authorization", &bearer(TOKEN_A))], b"").status, 200, "{path}");
        assert_eq!(http(a, "GET", path, &[("Authorization", &bearer(TOKEN_B))], b"").status, 200, "{path}");
    }
    assert_eq!(http(a, "POST", PREDICT, &[], &png(1)).status, 401);
    assert_eq!(http(a, "POST", PREDICT, &[("Authorization", &bearer(&TOKEN_A[..10]))], &png(1)).status, 401, "a prefix is no token");
    assert_eq!(http(a, "POST", PREDICT, &[("Authorization", &bearer(TOKEN_A))], &png(1)).status, 200);
    for open in ["/healthz", "/readyz", "/", "/app.js"] {
        assert_eq!(get(a, open).status, 200, "{open} stays open");
    }
}

#[test]
fn exposed_addresses_need_tokens_or_the_insecure_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = tiny_backend(dir.path(), "flowers", 1);
    let exposed = |f: &dyn Fn(&mut serve::ServeConfig)| {
        args(|a| {
            a.addr = "127.0.0.2:0".parse().expect("addr");
            f(a);
        })
    };
    let err = TestServer::try_start(exposed(&|_| {}), vec![backend.clone()]).err().expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, serve::Error::Unprotected(_)), "{msg}");
    assert!(msg.contains("127.0.0.2") && msg.contains("--token-file") && msg.contains("--insecure-no-auth"), "{msg}");

    let srv = TestServer::start(exposed(&|a| a.auth.insecure_no_auth = true), vec![backend.clone()]);
    let h = get(srv.addr, "/healthz").json();
    let warning = h["warnings"][0].as_str().expect("a warning on /healthz");
    assert!(warning.contains("without access tokens") && warning.contains("--insecure-no-auth"), "{warning}");
    assert_eq!(get(srv.addr, "/v1/models").status, 200, "open, as the flag says");
    drop(srv);

    let tokens = token_file(dir.path());
    let srv = TestServer::start(exposed(&|a| a.auth.token_file = Some(tokens.clone())), vec![backend.clone()]);
    assert_eq!(get(srv.addr, "/healthz").json()["warnings"], serde_json::json!([]));
    assert_eq!(get(srv.addr, "/v1/models").status, 401);

    let bad = dir.path().join("weak.txt");
    std::fs::write(&bad, "short\n").expect("write");
    let err = TestServer::try_start(exposed(&|a| a.auth.token_file = Some(bad.clone())), vec![backend.clone()]).err().expect("weak token refused");
    assert!(err.to_string().contains("weak.txt") && err.to_string().contains("at least 16"), "{err}");
}

#[test]
fn a_flood_gets_429_and_other_clients_are_unaffected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = token_file(dir.path());
    let backend = tiny_backend(dir.path(), "flowers", 1);
    // 0.01 requests/s: the bucket does not refill measurably during the test; burst 5.
    let limited = |a: &mut serve::ServeConfig| {
        a.limits.client_rps = Some(0.01);
        a.limits.client_burst = 5.0;
    };
    let srv = TestServer::start(
        args(|a| {
            limited(a);
            a.auth.token_file = Some(tokens.clone());
        }),
        vec![backend.clone()],
    );
    let with = |t: &str| vec![("Authorization", bearer(t))];
    let statuses: Vec<u16> = (0..30)
        .map(|_| {
            let h = with(TOKEN_A);
            let r = http(srv.addr, "GET", "/v1/models", &[(h[0].0, h[0].1.as_str())], b"");
            if r.status == 429 {
                let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
                assert!(retry >= 1, "retry after {retry}");
                assert_eq!(r.json()["error"]["code"], "rate_limited");
            }
            r.status
        })
        .collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 25, "{statuses:?}");
    let h = with(TOKEN_B);
    assert_eq!(http(srv.addr, "GET", "/v1/models", &[(h[0].0, h[0].1.as_str())], b"").status, 200, "token B is not limited by A's flood");
    drop(srv);

    // Without tokens the client is the address: 127.0.0.2 is not limited by 127.0.0.1's flood.
    let srv = TestServer::start(args(limited), vec![backend]);
    let codes: Vec<u16> = (0..12).map(|_| get(srv.addr, "/v1/models").status).collect();
    assert_eq!(codes.iter().filter(|&&s| s == 429).count(), 7, "{codes:?}");
    let other: IpAddr = "127.0.0.2".parse().expect("ip");
    assert_eq!(http_from(other, srv.addr, "GET", "/v1/models", &[], b"").status, 200);
}

#[test]
fn concurrent_requests_per_client_are_limited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = token_file(dir.path());
    let inst = Instrumented::new(tiny_backend(dir.path(), "flowers", 1));
    let srv = TestServer::start(
        args(|a| {
            a.auth.token_file = Some(tokens);
            a.limits.client_concurrency = Some(2);
            a.batching.max_batch = 1;
        }),
        vec![inst.clone()],
    );
    let a = srv.addr;
    let post = move |t: &'static str, i: u32| http(a, "POST", PREDICT, &[("Authorization", &bearer(t))], &png(i));
    inst.gate.close();
    let a1 = std::thread::spawn(move || post(TOKEN_A, 1));
    wait_until("A's first request is in the forward pass", || inst.gate.arrived.load(Ordering::SeqCst) == 1);
    let a2 = std::thread::spawn(move || post(TOKEN_A, 2));
    wait_for_metric(a, "petal_queue_depth_images{model=\"flowers\"} 1", &[("Authorization", &bearer(TOKEN_B))]);
    let r = post(TOKEN_A, 3);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")), "A has 2 requests in flight");
    let b = std::thread::spawn(move || post(TOKEN_B, 4));
    wait_for_metric(a, "petal_queue_depth_images{model=\"flowers\"} 2", &[("Authorization", &bearer(TOKEN_B))]);
    inst.gate.open();
    for (name, t) in [("A1", a1), ("A2", a2), ("B", b)] {
        assert_eq!(t.join().expect("thread").status, 200, "{name}");
    }
    assert_eq!(post(TOKEN_A, 5).status, 200, "A's slots are free again");
}

#[test]
fn cors_only_for_the_origins_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = tiny_backend(dir.path(), "flowers", 1);
    let preflight = |addr, origin: &str| {
        http(
            addr,
            "OPTIONS",
            PREDICT,
            &[("Origin", origin), ("Access-Control-Request-Method", "POST"), ("Access-Control-Request-Headers", "authorization")],
            b"",
        )
    };
    let srv = TestServer::start(args(|_| {}), vec![backend.clone()]);
    assert_eq!(preflight(srv.addr, "https://app.example.org").header("access-control-allow-origin"), None);
    assert_eq!(http(srv.addr, "GET", "/v1/models", &[("Origin", "https://app.example.org")], b"").header("access-control-allow-origin"), None);
    drop(srv);

    let srv = TestServer::start(args(|a| a.auth.cors_origin = vec!["https://app.example.org".into()]), vec![backend]);
    let ok = preflight(srv.addr, "https://app.example.org");
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example.org"));
    assert!(ok.header("access-control-allow-headers").is_some_and(|h| h.to_ascii_lowercase().contains("authorization")));
    assert_eq!(preflight(srv.addr, "https://evil.example").header("access-control-allow-origin"), None);
    let get_ok = http(srv.addr, "GET", "/v1/models", &[("Origin", "https://app.example.org")], b"");
    assert_eq!(get_ok.header("access-control-allow-origin"), Some("https://app.example.org"));
}

#[test]
fn on_loopback_without_tokens_the_defaults_do_not_throttle_one_host() {
    // The server's own defaults for the per-client limits (the test harness turns them off).
    let (srv, inst) = TestServer::instrumented(1, |a| {
        a.limits.client_rps = None;
        a.limits.client_concurrency = None;
        a.batching.max_batch = 1;
    });
    let a = srv.addr;
    let limits = get(a, "/healthz").json()["limits"]["per_client"].clone();
    assert_eq!(limits, serde_json::json!({ "exposed": false, "concurrency": null, "rps": null, "burst": null }));
    // 12 requests in flight from one address: over the 8 that an exposed service allows a client.
    inst.gate.close();
    let held: Vec<_> = (0..12).map(|i| std::thread::spawn(move || http(a, "POST", PREDICT, &[], &png(i)).status)).collect();
    wait_for_metric(a, "petal_queue_depth_images{model=\"flowers\"} 11", &[]);
    inst.gate.open();
    let statuses: Vec<u16> = held.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(statuses, vec![200; 12]);
}
