//! `cargo xtask`: the project's automation, in Rust, with no shell scripts.
//!
//! It provisions libtorch (`setup`), and runs everything that needs it (tests, benchmarks, the
//! pipeline stages) with `LIBTORCH` and the library path set, so users never export anything by hand.
//! Architecture invariant: xtask never depends on tch or on the stage crates; it drives them through
//! `cargo` and the `petal` binary.

mod bench;
mod browser;
mod data;
mod download;
mod libtorch;
mod lint;
mod pypi;
mod reference;
mod testrun;
mod weights;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Automation for the petal workspace", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Provision a CPU libtorch 2.13.0 from PyPI wheels (or check the one LIBTORCH names).
    Setup,
    /// Setup and the PyTorch reference, then the whole test suite (`cargo test --workspace`) with a
    /// summary of skipped checks; fails when a check CI must run was skipped (TESTING.md).
    Test(testrun::TestArgs),
    /// The gates CI runs before the tests: rustfmt check, tidy (missing_docs on every library crate,
    /// README snippets), clippy with warnings denied, rustdoc with warnings denied.
    Lint(lint::LintArgs),
    /// Run the benchmarks (release build) and, with --vs-pytorch, the Python references in the same run.
    Bench(bench::BenchArgs),
    /// Download pretrained ImageNet weights for an architecture and convert them into the project's format.
    FetchWeights(weights::FetchArgs),
    /// Download the Oxford 102 flowers (102flowers.tgz, imagelabels.mat, setid.mat) into data/.
    FetchData(data::FetchDataArgs),
    /// Run the whole job: fetch → preprocess → train → evaluate → predict (see `petal pipeline --help`).
    Pipeline {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Any stage of the `petal` binary: preprocess, train, evaluate, predict, checkpoint, ... (`cargo xtask petal --help`).
    #[command(external_subcommand)]
    Stage(Vec<OsString>),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => {
            let start = std::time::Instant::now();
            let lt = libtorch::ensure(&libtorch_link())?;
            if lt.user_supplied {
                eprintln!("setup: using your LIBTORCH={} (not provisioning one)", lt.dir.display());
            }
            eprintln!("setup: done in {:.2} s; plain `cargo build`/`cargo test` now work too", start.elapsed().as_secs_f64());
            Ok(())
        }
        Cmd::Test(args) => testrun::run(args),
        Cmd::Lint(args) => lint::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::FetchWeights(args) => weights::run(&args),
        Cmd::FetchData(args) => data::run(&args).map(|_| ()),
        Cmd::Pipeline { args } => data::pipeline(args),
        Cmd::Stage(args) => {
            let mut args = args.into_iter();
            let stage = args.next().unwrap_or_default();
            let rest: Vec<OsString> = args.collect();
            if stage == "petal" {
                return run_petal(rest);
            }
            let mut all = vec![stage];
            all.extend(rest);
            run_petal(all)
        }
    }
}

/// The repository root (xtask's manifest lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// `.libtorch` in the repository (a link to the provisioned libtorch).
pub fn libtorch_link() -> PathBuf {
    repo_root().join(".libtorch")
}

/// A `cargo` command in the repository root, with libtorch ensured and its environment set.
pub fn cargo() -> Result<Command> {
    let lt = libtorch::ensure(&libtorch_link())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    apply_env(&mut cmd, &lt);
    Ok(cmd)
}

/// Sets `LIBTORCH` and the dynamic-library search path for a child process.
pub fn apply_env(cmd: &mut Command, lt: &libtorch::Libtorch) {
    // For our own cache the value equals what .cargo/config.toml gives, so torch-sys is not rebuilt.
    let value = if lt.user_supplied { lt.dir.clone() } else { libtorch_link() };
    cmd.env("LIBTORCH", value);
    let var = if cfg!(target_os = "macos") { "DYLD_LIBRARY_PATH" } else { "LD_LIBRARY_PATH" };
    let mut paths = vec![lt.lib_dir()];
    if let Some(old) = std::env::var_os(var) {
        paths.extend(std::env::split_paths(&old));
    }
    if let Ok(joined) = std::env::join_paths(paths) {
        cmd.env(var, joined);
    }
}

/// Runs the `petal` binary (dev profile: dependencies are optimised) with the given arguments.
pub fn run_petal(args: Vec<OsString>) -> Result<()> {
    let mut cmd = cargo()?;
    cmd.args(["run", "--quiet", "--package", "petal", "--"]).args(args);
    run_status(cmd, "petal")
}

/// Runs a command, turning a failed exit into an error (the child already printed why).
pub fn run_status(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("could not start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
