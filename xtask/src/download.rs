//! HTTP downloads with a progress bar, sha256 verification, resumption and atomic placement.
//!
//! Every error is one sentence a user can act on: the network, the hash and the disk each get their own.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the downloaded bytes must hash to.
#[derive(Debug, Clone)]
pub enum Expect {
    /// The full lowercase hex sha256 (PyPI publishes these).
    Sha256(String),
    /// A lowercase hex prefix of the sha256 (torchvision puts 8 hex digits in its file names).
    Sha256Prefix(String),
    /// An md5 in lowercase hex (the Oxford flowers site publishes md5 sums).
    Md5(String),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .user_agent(concat!("petal-xtask/", env!("CARGO_PKG_VERSION")))
        // The operating system's trust store, so corporate proxies and custom CAs work.
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build())
        .build()
        .into()
}

/// Explains a transport error in one sentence naming the host.
fn network_error(url: &str, err: ureq::Error) -> anyhow::Error {
    anyhow::anyhow!("could not download {url}: {err}. Check the network connection (or a proxy), then rerun; nothing was left half-written")
}

/// Turns an I/O error while writing `path` into one clear sentence, calling out a full disk.
pub fn write_error(path: &Path, err: io::Error) -> anyhow::Error {
    if is_disk_full(&err) {
        anyhow::anyhow!(
            "no space left on the disk while writing {}: free some space and rerun; a download resumes from what was written",
            path.display()
        )
    } else {
        anyhow::anyhow!("could not write {}: {err}", path.display())
    }
}

/// True for ENOSPC / EDQUOT.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) || matches!(err.raw_os_error(), Some(28) | Some(122))
}

/// GETs a JSON document.
pub fn get_json(url: &str, accept: &str) -> Result<serde_json::Value> {
    let mut resp = agent().get(url).header("Accept", accept).call().map_err(|e| network_error(url, e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        bail!("could not download {url}: the server answered HTTP {status}");
    }
    resp.body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| anyhow::anyhow!("could not read the answer of {url}: {e}"))
        .and_then(|text| serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{url} did not return valid JSON: {e}")))
}

/// Downloads `url` to `dest` unless `dest` already exists, verifying `expect`.
///
/// Bytes go to `dest.part` first; an interrupted download resumes from there with an HTTP Range request.
/// Only a verified file is renamed to `dest`, so `dest` is either absent or complete and correct.
/// Returns whether a download happened.
pub fn fetch(url: &str, dest: &Path, expect: &Expect, label: &str) -> Result<bool> {
    if dest.exists() {
        return Ok(false);
    }
    let dir = dest.parent().context("download destination has no parent folder")?;
    fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let part = part_path(dest);
    let have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut req = agent().get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req.call().map_err(|e| network_error(url, e))?;
    let status = resp.status().as_u16();
    let (mut file, start) = match status {
        206 => (OpenOptions::new().append(true).open(&part).map_err(|e| write_error(&part, e))?, have),
        200 => (File::create(&part).map_err(|e| write_error(&part, e))?, 0),
        416 if have > 0 => {
            // The partial file is already complete (or longer than the resource): start again.
            fs::remove_file(&part).map_err(|e| write_error(&part, e))?;
            return fetch(url, dest, expect, label);
        }
        _ => bail!("could not download {url}: the server answered HTTP {status}"),
    };
    let total = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).map(|n| n + start);
    let bar = progress_bar(total, label);
    bar.set_position(start);
    let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.abandon();
                bail!("the download of {url} broke off after {} bytes ({e}); rerun to resume it", bar.position());
            }
        };
        file.write_all(&buf[..n]).map_err(|e| write_error(&part, e))?;
        bar.inc(n as u64);
    }
    file.sync_all().map_err(|e| write_error(&part, e))?;
    drop(file);
    bar.finish_and_clear();
    if let Err(e) = verify(&part, expect) {
        let _ = fs::remove_file(&part);
        return Err(e.context(format!("the download of {url} was deleted; rerun to fetch it again")));
    }
    fs::rename(&part, dest).map_err(|e| write_error(dest, e))?;
    Ok(true)
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

fn progress_bar(total: Option<u64>, label: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// Hashes `path` with sha256 (streaming).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).with_context(|| format!("could not read {}", path.display()))?;
    Ok(petal_common::hex(&h.finalize()))
}

/// Checks a file against its expected hash; the error names both hashes.
pub fn verify(path: &Path, expect: &Expect) -> Result<()> {
    let (got, want, ok) = match expect {
        Expect::Sha256(want) => {
            let got = sha256_file(path)?;
            let ok = got.eq_ignore_ascii_case(want);
            (format!("sha256 {got}"), format!("sha256 {want}"), ok)
        }
        Expect::Sha256Prefix(prefix) => {
            let got = sha256_file(path)?;
            let ok = got.starts_with(&prefix.to_ascii_lowercase());
            (format!("sha256 {got}"), format!("a sha256 starting with {prefix}"), ok)
        }
        Expect::Md5(want) => {
            let got = md5_file(path)?;
            let ok = got.eq_ignore_ascii_case(want);
            (format!("md5 {got}"), format!("md5 {want}"), ok)
        }
    };
    if !ok {
        bail!("{} has {got} but {want} was expected (corrupted or tampered download)", path.display());
    }
    Ok(())
}

fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut ctx = md5::Context::new();
    io::copy(&mut f, &mut ctx).with_context(|| format!("could not read {}", path.display()))?;
    Ok(petal_common::hex(&ctx.compute().0))
}
