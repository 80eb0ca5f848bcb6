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
mod libjpeg;
mod libtorch;
mod lint;
mod mutants;
mod onnxruntime;
mod pypi;
mod reference;
mod setup;
mod testrun;
mod weights;
mod wheel_lib;

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
    /// Check the prerequisites (C compiler, disk space), then provision a CPU libtorch 2.13.0,
    /// Pillow's libjpeg-turbo and onnxruntime from PyPI wheels (or check the ones LIBTORCH /
    /// PETAL_LIBJPEG / PETAL_ONNXRUNTIME name).
    Setup,
    /// Setup and the PyTorch reference, then the whole test suite (`cargo test --workspace`) with a
    /// summary of skipped checks; fails when a check CI must run was skipped (TESTING.md).
    Test(testrun::TestArgs),
    /// The gates CI runs before the tests: rustfmt check, tidy (BENCHMARKS.md is the rendering of
    /// bench/record.json, missing_docs on every library crate, README snippets), clippy with
    /// warnings denied, rustdoc with warnings denied.
    Lint(lint::LintArgs),
    /// Mutation testing of one crate's hand-picked modules, by the command TESTING.md records
    /// (cargo-mutants; shared settings in .cargo/mutants.toml).
    Mutants(mutants::MutantsArgs),
    /// Run the benchmarks (release build) and, with --vs-pytorch, the Python references in the same run,
    /// into the record target/bench/latest.json; --write-md renders BENCHMARKS.md from it.
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
            let native = setup::Native::ensure()?;
            if native.torch.user_supplied {
                eprintln!("setup: using your LIBTORCH={} (not provisioning one)", native.torch.dir.display());
            }
            if native.jpeg.user_supplied {
                eprintln!("setup: using your PETAL_LIBJPEG={} (not provisioning one)", native.jpeg.dir.display());
            }
            if native.ort.user_supplied {
                eprintln!("setup: using your PETAL_ONNXRUNTIME={} (not provisioning one)", native.ort.dir.display());
            }
            eprintln!("setup: done in {:.2} s; plain `cargo build`/`cargo test` now work too", start.elapsed().as_secs_f64());
            Ok(())
        }
        Cmd::Test(args) => testrun::run(args),
        Cmd::Lint(args) => lint::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Mutants(args) => mutants::run(&args),
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

/// `.libjpeg` in the repository (a link to the provisioned libjpeg-turbo).
pub fn libjpeg_link() -> PathBuf {
    repo_root().join(".libjpeg")
}

/// `.onnxruntime` in the repository (a link to the provisioned onnxruntime).
pub fn onnxruntime_link() -> PathBuf {
    repo_root().join(petal_common::onnxruntime::REPO_LINK)
}

/// A `cargo` command in the repository root, with the prerequisites checked, the native libraries
/// ensured and the environment set (see [`setup::Native::apply`]).
pub fn cargo() -> Result<Command> {
    let native = setup::Native::ensure()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root());
    native.apply(&mut cmd);
    Ok(cmd)
}

/// Runs the `petal` binary (built once per xtask run, see [`setup::petal_binary`]) with the given arguments.
pub fn run_petal(args: Vec<OsString>) -> Result<()> {
    let bin = setup::petal_binary()?;
    let mut cmd = Command::new(bin);
    cmd.current_dir(repo_root()).args(args);
    setup::Native::ensure()?.apply(&mut cmd);
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
