//! Headless Chromium for the serve crate's browser test (`crates/serve/tests/browser.rs`).
//!
//! `cargo xtask test` calls [`ensure_chromium`] first, so a CI machine runs the browser test instead
//! of skipping it: when `chromium` or `chromedriver` is missing it installs the Debian packages
//! `chromium` and `chromium-driver` with apt-get (as root, or through `sudo -n`). When that is not
//! possible it says why, and the test itself skips with a printed reason.

use std::process::{Command, Stdio};

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Whether Chromium and its WebDriver are both installed.
pub fn installed() -> bool {
    on_path("chromedriver") && (on_path("chromium") || on_path("chromium-browser") || on_path("google-chrome"))
}

/// Installs `chromium` and `chromium-driver` with apt-get when they are missing; prints why not when it cannot.
pub fn ensure_chromium() {
    if installed() {
        return;
    }
    if !on_path("apt-get") {
        eprintln!("test: chromium/chromedriver are missing and apt-get is not available: the browser test will skip");
        return;
    }
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let prefix: &[&str] = if is_root {
        &[]
    } else if on_path("sudo") {
        &["sudo", "-n"]
    } else {
        eprintln!("test: chromium/chromedriver are missing; installing them needs root (or sudo): the browser test will skip");
        return;
    };
    eprintln!("test: installing chromium and chromium-driver with apt-get (for the browser test)");
    let apt = |args: &[&str]| {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        Command::new(argv[0]).args(&argv[1..]).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if !apt(&["update", "-qq"]) || !apt(&["install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"]) {
        eprintln!("test: apt-get could not install chromium and chromium-driver: the browser test will skip");
    } else if !installed() {
        eprintln!("test: chromium-driver is installed but chromedriver is not on the PATH: the browser test will skip");
    }
}
