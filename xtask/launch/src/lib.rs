//! The checks `cargo xtask` makes before anything long: this crate depends on `std` and `libc`
//! only, so on a fresh clone it compiles in seconds, and a machine that lacks a C compiler, the
//! disk for a build, or a data folder the command names hears so before the minutes of compiling
//! the xtask proper (a TLS stack, archive readers) and the workspace. The xtask proper runs the
//! same checks through this library, so there is one definition of each.

#![warn(missing_docs)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Free space a build from nothing needs in the target folder's file system: the README's two
/// commands from nothing left 2.5 GB after the main job and more after lint and test
/// (docs/history/benchmarks.md, "Time to a first result"), hence the margin.
pub const FROM_NOTHING_BYTES: u64 = 9 << 30;
/// Free space an incremental build needs when `target/` already exists.
pub const INCREMENTAL_BYTES: u64 = 2 << 30;

/// The variables cargo sets for the package it runs (the launcher, then xtask), which a nested
/// cargo must not see: a `CARGO_MANIFEST_DIR` inherited from `cargo run -p xtask` is seen by
/// build scripts (ring's) and rebuilt everything that depends on them whenever plain `cargo` and
/// `cargo xtask` alternate.
pub fn is_package_var(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

/// Removes [`is_package_var`] variables from `cmd`'s environment.
pub fn strip_package_vars(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(is_package_var) {
            cmd.env_remove(&key);
        }
    }
}

/// The cargo target folder of the repository at `repo` (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"))
}

/// A C compiler must run: the preprocess crate compiles its libjpeg shim (and ring its C code).
pub fn check_compiler() -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let ok = Command::new(&cc).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        return Err(format!(
            "no C compiler: `{cc} --version` did not run. The build compiles a little C (the JPEG shim); install one (Debian/Ubuntu: `apt-get install gcc`; Fedora: `dnf install gcc`; macOS: `xcode-select --install`) or set CC, then rerun"
        ));
    }
    Ok(())
}

/// The target folder's file system must have room for the build: [`FROM_NOTHING_BYTES`] when
/// there is no `debug/` yet, [`INCREMENTAL_BYTES`] otherwise.
pub fn check_disk(target: &Path) -> Result<(), String> {
    if target.join("debug").is_dir() {
        check_disk_needing(target, INCREMENTAL_BYTES, "a build")
    } else {
        check_disk_needing(target, FROM_NOTHING_BYTES, "a build from nothing")
    }
}

/// [`check_disk`] for `what`, which needs `need` bytes.
pub fn check_disk_needing(target: &Path, need: u64, what: &str) -> Result<(), String> {
    // The nearest existing ancestor carries the file system the build will write to.
    let probe = target.ancestors().find(|p| p.exists()).unwrap_or(Path::new("."));
    let Some(free) = free_bytes(probe) else { return Ok(()) };
    if free < need {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(format!(
            "only {:.1} GiB free on the file system of {} but {} needs about {:.0} GiB: free some space (or set CARGO_TARGET_DIR to a folder on a larger disk) and rerun",
            gib(free),
            target.display(),
            what,
            gib(need)
        ));
    }
    Ok(())
}

/// Bytes available to an unprivileged user on the file system holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u64 on Linux x86_64, u32/c_ulong elsewhere).
    #[allow(clippy::unnecessary_cast)]
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// The value of `flag` in `args` (`--flag v` or `--flag=v`).
pub fn arg_value(args: &[OsString], flag: &str) -> Option<String> {
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == flag {
            return it.next();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    None
}

/// The value of a top-level `key = "string"` (or `'string'`) line of a TOML file, before any
/// table header; `None` when the key is absent or written otherwise (the xtask proper reads the
/// file with a real TOML parser later; this scan only lets a missing path be named early).
pub fn top_level_string(text: &str, key: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            return None;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let rest = &v[1..];
        let end = rest.find(quote)?;
        let s = &rest[..end];
        // Escapes in basic strings are left to the real parser.
        return (quote == '\'' || !s.contains('\\')).then(|| s.to_string());
    }
    None
}

/// The data folder and weights that the arguments or their `--config` file name must exist
/// (relative paths are relative to `repo`, where `petal` runs): checked in milliseconds, before
/// any build.
pub fn check_named_paths(repo: &Path, args: &[OsString]) -> Result<(), String> {
    let (mut data, mut weights) = (None, None);
    if let Some(p) = arg_value(args, "--config") {
        let path = repo.join(&p);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "the pipeline config {p} cannot be read (looked in {}: {e}): pass an existing file, e.g. --config examples/pipeline.toml",
                repo.display()
            )
        })?;
        data = top_level_string(&text, "data");
        weights = top_level_string(&text, "weights");
    }
    if let Some(data) = arg_value(args, "--data").or(data) {
        if !repo.join(&data).exists() {
            return Err(format!(
                "the data folder {data} does not exist: point --data (or `data` in the config) at an ImageFolder with train/ valid/ [test/], or leave both unset to download the Oxford 102 release (`cargo xtask fetch-data`)"
            ));
        }
    }
    if let Some(weights) = arg_value(args, "--weights").or(weights) {
        if !repo.join(&weights).exists() {
            return Err(format!(
                "the weights {weights} do not exist: point --weights (or `weights` in the config) at a file, or leave both unset to download them (`cargo xtask fetch-weights <arch>`)"
            ));
        }
    }
    Ok(())
}

/// Every check `cargo xtask <args>` makes before building anything: a C compiler, free disk for
/// the build, and the paths the arguments name (for the commands that take them).
pub fn preflight(repo: &Path, args: &[OsString]) -> Result<(), String> {
    check_compiler()?;
    check_disk(&target_dir(repo))?;
    let first = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    let takes_paths = !matches!(first.as_str(), "setup" | "test" | "lint" | "bench" | "fetch-weights" | "fetch-data" | "help" | "");
    if takes_paths && !args.iter().any(|a| a == "--help" || a == "-h") {
        check_named_paths(repo, args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_strings_are_read_until_the_first_table() {
        let text = "# c\ndata = \"../shared/data/x\"\nweights='w.safetensors'\nescaped = \"a\\\\b\"\n[train]\nname = \"n\"\n";
        assert_eq!(top_level_string(text, "data").as_deref(), Some("../shared/data/x"));
        assert_eq!(top_level_string(text, "weights").as_deref(), Some("w.safetensors"));
        assert_eq!(top_level_string(text, "escaped"), None, "escapes are left to the real parser");
        assert_eq!(top_level_string(text, "name"), None, "keys of tables are not top-level");
        assert_eq!(top_level_string("data = 3\n", "data"), None);
    }

    #[test]
    fn named_paths_that_do_not_exist_are_named() {
        let repo = tempfile::tempdir().expect("tempdir");
        std::fs::write(repo.path().join("p.toml"), "data = \"no/such/folder\"\n").expect("write");
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let err = check_named_paths(repo.path(), &args(&["pipeline", "--config", "p.toml"])).expect_err("missing data");
        assert!(err.contains("no/such/folder") && err.contains("--data"), "{err}");
        std::fs::create_dir_all(repo.path().join("no/such/folder")).expect("mkdir");
        check_named_paths(repo.path(), &args(&["pipeline", "--config", "p.toml"])).expect("now it exists");
        let err = check_named_paths(repo.path(), &args(&["pipeline", "--config=missing.toml"])).expect_err("missing config");
        assert!(err.contains("missing.toml"), "{err}");
        let err = check_named_paths(repo.path(), &args(&["train", "--weights", "w.bin"])).expect_err("missing weights");
        assert!(err.contains("w.bin"), "{err}");
    }

    #[test]
    fn too_little_disk_is_refused_with_the_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = check_disk_needing(&dir.path().join("target"), u64::MAX / 2, "a build from nothing").expect_err("no disk is that large");
        assert!(err.contains("GiB free") && err.contains("a build from nothing"), "{err}");
        check_disk_needing(&dir.path().join("target"), 1, "a build").expect("one byte is free");
    }
}
