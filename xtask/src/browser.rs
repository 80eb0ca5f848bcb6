//! The serve crate's outside tools: headless Chromium for its browser test
//! (`crates/serve/tests/it/browser.rs`) and ApacheBench for its load test with `ab`
//! (`crates/serve/tests/it/rejections.rs`).
//!
//! `cargo xtask test` calls [`ensure_chromium`] first, so a CI machine runs those tests instead of
//! skipping them: it installs what is missing of the Debian packages `chromium` and `chromium-driver`
//! (for `chromium`/`chromedriver`) and `apache2-utils` (for `ab`) with apt-get (as root, or through
//! `sudo -n`). When that is not possible it says why, and the tests skip through `testkit::skip`.

use std::process::{Command, Stdio};

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether Chromium and its WebDriver are both installed.
pub fn installed() -> bool {
    on_path("chromedriver") && (on_path("chromium") || on_path("chromium-browser") || on_path("google-chrome"))
}

/// Installs what is missing of `chromium`, `chromium-driver` and `apache2-utils` (`ab`) with apt-get;
/// prints why not when it cannot.
pub fn ensure_chromium() {
    let mut packages: Vec<&str> = Vec::new();
    if !installed() {
        packages.extend(["chromium", "chromium-driver"]);
    }
    if !on_path("ab") {
        packages.push("apache2-utils");
    }
    if packages.is_empty() {
        return;
    }
    let what = packages.join(", ");
    if !on_path("apt-get") {
        eprintln!("test: {what} missing and apt-get is not available: the browser and ab tests will skip");
        return;
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let prefix: &[&str] = if is_root {
        &[]
    } else if on_path("sudo") {
        &["sudo", "-n"]
    } else {
        eprintln!("test: {what} missing; installing needs root (or sudo): the browser and ab tests will skip");
        return;
    };
    eprintln!("test: installing {what} with apt-get (for the serve crate's browser and ab tests)");
    let apt = |args: &[&str]| {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        Command::new(argv[0]).args(&argv[1..]).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&packages);
    if !apt(&["update", "-qq"]) || !apt(&install) {
        eprintln!("test: apt-get could not install {what}: the browser and ab tests may skip");
    } else if packages.contains(&"chromium-driver") && !installed() {
        eprintln!("test: chromium-driver is installed but chromedriver is not on the PATH: the browser test will skip");
    }
}
