//! `cargo xtask`: checks the prerequisites within seconds ([`xtask_launch::preflight`]), then runs
//! the xtask proper (`cargo run --package xtask -- <args>`), whose first build takes minutes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // This package lives in xtask/launch/.
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = xtask_launch::preflight(&repo, &args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&repo).args(["run", "--package", "xtask", "--"]).args(&args);
    xtask_launch::strip_package_vars(&mut cmd);
    match cmd.status() {
        Ok(status) => std::process::exit(status.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("error: could not start cargo: {e}");
            std::process::exit(1);
        }
    }
}
