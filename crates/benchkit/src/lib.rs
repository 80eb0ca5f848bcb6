//! Shared plumbing of the benchmark programs `crates/*/examples/bench_*.rs`.
//!
//! Every benchmark is an example of the stage crate it measures, driven by `cargo xtask bench`.
//! They share one command-line convention and one output protocol, defined here:
//!
//! - `--json`: the report is printed as **one JSON object on the last line of stdout**, compact
//!   (no newlines inside), which is what the harness parses; progress and notes go to stderr.
//!   Without it the same report is printed pretty, for people.
//! - `--smoke`: tiny generated inputs, no downloads, a few seconds: `cargo xtask bench --smoke`
//!   (part of `cargo xtask test`) runs every suite this way so the benchmarks cannot rot.
//!
//! A benchmark declares its own flags as a [`clap::Args`] struct and hands its body to [`main`]:
//!
//! ```no_run
//! #[derive(clap::Args)]
//! struct Args {
//!     /// Timed repetitions.
//!     #[arg(long, default_value_t = 5)]
//!     runs: usize,
//! }
//!
//! fn run(args: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
//!     let runs = if common.smoke { 1 } else { args.runs };
//!     Ok(serde_json::json!({ "runs": runs, "save_s": 0.1 }))
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     benchkit::main("bench_example", run)
//! }
//! ```

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;

/// The error type of a benchmark body: anything printable (`?` converts most errors, and
/// `String`/`&str` via `.into()`).
pub type Error = Box<dyn std::error::Error>;

/// The result type of a benchmark body.
pub type Result<T> = std::result::Result<T, Error>;

/// Flags every benchmark accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Common {
    /// Print the report as one compact JSON object on the last stdout line (what `cargo xtask bench` reads).
    #[arg(long)]
    pub json: bool,
    /// Tiny generated inputs, a few seconds, no downloads: checks that the benchmark still runs.
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Parser)]
struct Cli<A: clap::Args> {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    args: A,
}

/// Parses the command line (the benchmark's own flags plus [`Common`]), runs `body` and prints its
/// report by the protocol in the crate docs. Exit code 0 on success, 1 when `body` fails (its
/// error is printed to stderr, prefixed with `name`), 2 for a bad command line (clap's message).
pub fn main<A, F>(name: &str, body: F) -> ExitCode
where
    A: clap::Args,
    F: FnOnce(&A, &Common) -> Result<Value>,
{
    let cli = Cli::<A>::parse_from(std::env::args_os());
    match body(&cli.args, &cli.common) {
        Ok(report) => {
            print_report(&report, cli.common.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a report: with `json`, one compact line (the protocol); otherwise pretty.
pub fn print_report(report: &Value, json: bool) {
    if json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_else(|_| report.to_string()));
    }
}

/// The median of `values` (mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The workspace root (this crate lives in `crates/benchkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target folder: `CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// `~/.cache/petal/weights/<arch>-imagenet.safetensors` (what `cargo xtask fetch-weights <arch>`
/// writes; `PETAL_CACHE_DIR` replaces `~/.cache/petal`) if that file exists.
pub fn cached_weights(arch: &str) -> Option<PathBuf> {
    let root = match std::env::var_os("PETAL_CACHE_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/petal"),
    };
    Some(root.join("weights").join(format!("{arch}-imagenet.safetensors"))).filter(|p| p.is_file())
}

/// Writes a small ImageFolder dataset for smoke runs: `<root>/<split>/<class>/<i>.jpg` for every
/// `(split, images per class)` in `splits` and `classes` classes named `1`, `2`, …, each image a
/// `width`×`height` JPEG whose colours depend on its class (so a classifier can learn them).
pub fn image_folder(root: &Path, classes: usize, splits: &[(&str, usize)], width: u32, height: u32) -> Result<()> {
    for (split, per_class) in splits {
        for c in 0..classes {
            let dir = root.join(split).join((c + 1).to_string());
            std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            for i in 0..*per_class {
                let base = [(70 * c % 256) as u8, (255 - 50 * c % 256) as u8, (40 * i % 256) as u8];
                let img = image::RgbImage::from_fn(width, height, |x, y| {
                    let g = ((x + 2 * y) % 64) as u8;
                    image::Rgb([base[0].wrapping_add(g), base[1].wrapping_sub(g / 2), base[2].wrapping_add(g / 4)])
                });
                let path = dir.join(format!("{i}.jpg"));
                img.save(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn cli_parses_common_and_own_flags() {
        #[derive(clap::Args)]
        struct Own {
            #[arg(long, default_value_t = 7)]
            runs: usize,
        }
        let cli = Cli::<Own>::try_parse_from(["b", "--json", "--runs", "3"]).expect("parse");
        assert!(cli.common.json && !cli.common.smoke);
        assert_eq!(cli.args.runs, 3);
        assert!(Cli::<Own>::try_parse_from(["b", "--nope"]).is_err());
    }

    #[test]
    fn image_folder_writes_decodable_jpegs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        image_folder(dir, 2, &[("train", 3), ("valid", 1)], 40, 30).expect("write");
        let img = image::open(dir.join("train/2/2.jpg")).expect("decode");
        assert_eq!((img.width(), img.height()), (40, 30));
        assert!(dir.join("valid/1/0.jpg").is_file() && !dir.join("valid/1/1.jpg").exists());
    }
}
