//! The upload page in a real headless Chromium, driven over WebDriver (chromedriver's HTTP API):
//! open the page, reach the controls by keyboard, upload an image through the file input, read
//! the rendered top-1 name (it must equal the API's answer for the same file), check there is no
//! horizontal scrolling at phone width, and save screenshots into the test's temporary folder (or `$PETAL_BROWSER_SCREENSHOTS`).
//!
//! Needs `chromedriver` and `chromium` (Debian packages `chromium-driver`, `chromium`; `cargo xtask
//! test` installs them). Without them the test skips through `testkit::skip` (`serve/browser/chromium`). `PETAL_BROWSER_CHECKPOINT`
//! and `PETAL_BROWSER_IMAGE` replace the tiny generated checkpoint and picture (for the
//! screenshot in docs/serve.md of a trained model).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_on_path(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    names.iter().find_map(|n| std::env::split_paths(&paths).map(|d| d.join(n)).find(|p| p.is_file()))
}

/// chromedriver as a child process, killed on drop.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(driver: &Path, browser: &Path) -> Driver {
        // Port 0: chromedriver binds a free port itself and says which ("ChromeDriver was started
        // successfully on port N."), so no other test can take it between a probe and the bind.
        let mut child = Command::new(driver).arg("--port=0").stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start chromedriver");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            // Keep reading to the end, so chromedriver never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(port) =
                        line.split("started successfully on port ").nth(1).and_then(|r| r.trim().trim_end_matches('.').parse::<u16>().ok())
                    {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).expect("chromedriver says which port it listens on");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
        let mut d = Driver { child, base, http, session: String::new() };
        wait_until("chromedriver is ready", || d.http.get(format!("{}/status", d.base)).send().is_ok_and(|r| r.status().is_success()));
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": browser.display().to_string(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900", "--force-device-scale-factor=1"],
        }}}});
        let v = d.call("POST", "/session", caps);
        d.session = v["sessionId"].as_str().expect("session id").to_string();
        d
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = if path == "/session" { format!("{}{path}", self.base) } else { format!("{}/session/{}{path}", self.base, self.session) };
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let resp = req.send().expect("webdriver request");
        let status = resp.status();
        let v: Value = resp.json().expect("webdriver json");
        assert!(status.is_success(), "webdriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn element(&self, css: &str) -> String {
        let v = self.call("POST", "/element", json!({ "using": "css selector", "value": css }));
        v[ELEMENT].as_str().expect("element id").to_string()
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), Value::Null).as_str().unwrap_or("").to_string()
    }

    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({ "script": js, "args": [] }))
    }

    fn screenshot(&self, out: &Path) {
        let b64 = self.call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64")).expect("decode screenshot");
        std::fs::write(out, png).expect("write screenshot");
    }

    fn press_tab(&self) {
        let actions = json!({ "actions": [{ "type": "key", "id": "kb", "actions": [
            { "type": "keyDown", "value": "\u{E004}" }, { "type": "keyUp", "value": "\u{E004}" } ] }] });
        self.call("POST", "/actions", actions);
    }

    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let t = self.text(css);
            if ok(&t) {
                return t;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "{what}: {css} says {t:?}; status: {:?}", self.text("#status"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn upload_through_the_page_in_headless_chromium() {
    let (Some(driver), Some(browser)) = (find_on_path(&["chromedriver"]), find_on_path(&["chromium", "chromium-browser", "google-chrome"])) else {
        testkit::skip(
            "serve/browser/chromium",
            "chromedriver/chromium not found on PATH (install the Debian packages chromium and chromium-driver, or run `cargo xtask test`)",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let backend: std::sync::Arc<dyn serve::Backend> = match std::env::var_os("PETAL_BROWSER_CHECKPOINT") {
        Some(p) => {
            std::sync::Arc::new(serve::PredictorBackend::load("flowers", Path::new(&p), tch::Device::Cpu, 40_000_000).expect("load checkpoint"))
        }
        None => tiny_backend(dir.path(), "flowers", 3),
    };
    let image = match std::env::var_os("PETAL_BROWSER_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = dir.path().join("flower.png");
            picture(7).save(&p).expect("save picture");
            p
        }
    };
    let srv = TestServer::start(args(|_| {}), vec![backend]);
    let expected = http(srv.addr, "POST", "/v1/models/flowers/predict", &[], &std::fs::read(&image).expect("read image")).json();
    let expected_top1 = expected["predictions"][0]["top"][0]["name"].as_str().expect("top-1 name").to_string();

    let d = Driver::start(&driver, &browser);
    d.call("POST", "/url", json!({ "url": format!("http://{}/", srv.addr) }));
    d.wait_text("#status", "the model list loads", |t| t.starts_with("Ready"));

    // Keyboard: Tab from the top of the page reaches the model choice, then the file input.
    let mut focused = Vec::new();
    for _ in 0..4 {
        d.press_tab();
        focused.push(d.script("return document.activeElement.id").as_str().unwrap_or("").to_string());
    }
    assert_eq!(focused[0], "model", "first Tab stop: {focused:?}");
    assert!(focused.contains(&"file".to_string()), "the file input is reachable by keyboard: {focused:?}");

    let file = d.element("#file");
    d.call("POST", &format!("/element/{file}/value"), json!({ "text": image.display().to_string() }));
    let top1 = d.wait_text("#top1", "the answer renders", |t| !t.is_empty());
    assert_eq!(top1.to_lowercase(), expected_top1.to_lowercase(), "the page shows the API's top-1");
    let bars = d.script("return document.querySelectorAll('#bars li').length").as_u64();
    assert_eq!(bars, Some(expected["predictions"][0]["top"].as_array().map_or(0, Vec::len) as u64));
    let preview_loaded = d.script("const i = document.getElementById('preview'); return i.complete && i.naturalWidth > 0");
    assert_eq!(preview_loaded, json!(true), "the photo is shown (blob: URL allowed by the CSP)");

    // Screenshots go to the test's temporary folder, or where PETAL_BROWSER_SCREENSHOTS names.
    let out = std::env::var_os("PETAL_BROWSER_SCREENSHOTS").map_or_else(|| dir.path().join("screenshots"), std::path::PathBuf::from);
    std::fs::create_dir_all(&out).expect("create the screenshot folder");
    d.screenshot(&out.join("page.png"));

    // Phone width: nothing wider than the screen.
    d.call("POST", "/window/rect", json!({ "width": 390, "height": 844 }));
    let widths = d.script("return [document.documentElement.scrollWidth, window.innerWidth]");
    assert!(widths[0].as_u64() <= widths[1].as_u64(), "no horizontal scrolling at phone width: [content, window] = {widths}");
    d.screenshot(&out.join("page-phone.png"));
    eprintln!("screenshots: {}", out.canonicalize().unwrap_or(out).display());
}
