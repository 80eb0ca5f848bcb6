//! `cargo xtask mutants <run>`: mutation testing of the modules whose logic the tests must pin down,
//! by the commands TESTING.md records ("Mutation testing").
//!
//! Each run names a package, the files (and, where a file holds more than the logic under test, the
//! functions) that cargo-mutants mutates, and the tests that must catch every mutant. The settings
//! every run shares live in `.cargo/mutants.toml`, which cargo-mutants reads itself. The native
//! libraries are set up and their paths passed as absolute ones, so the copy of the tree that
//! cargo-mutants builds in (or the tree itself, with `--in-place`) finds them.

use anyhow::{bail, Context, Result};
use std::ffi::OsString;

/// Seconds a mutant's build may take before it counts as a timeout (a mutant that sends rustc
/// into a long loop, rather than a slow machine).
const BUILD_TIMEOUT_S: &str = "900";

/// The cargo-mutants release the recorded runs used.
pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// Arguments of `cargo xtask mutants`.
#[derive(clap::Args, Debug)]
pub struct MutantsArgs {
    /// Which run: the crate whose modules are mutated.
    #[arg(value_parser = run_names())]
    pub run: String,
    /// Mutate the working tree itself instead of a copy: reuses `target/` (minutes instead of a
    /// build from nothing), restores every file after each mutant. Do not edit the tree meanwhile.
    #[arg(long)]
    pub in_place: bool,
    /// List the mutants this run would test, and stop.
    #[arg(long)]
    pub list: bool,
    /// Test only the k-th of n shards of the mutants ("k/n", k from 0).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// Further arguments for `cargo mutants`, after `--` (for example `-F REGEX` to re-run survivors).
    #[arg(last = true)]
    pub extra: Vec<OsString>,
}

/// One recorded run: what is mutated and which tests answer.
#[derive(Debug)]
pub struct Run {
    /// The name `cargo xtask mutants` takes.
    pub name: &'static str,
    /// The package mutated, and whose tests run.
    pub package: &'static str,
    /// Files mutated, relative to the repository root.
    pub files: &'static [&'static str],
    /// When not empty, only mutants whose names match one of these regular expressions (cargo-mutants'
    /// `-F`): the functions of a file that hold the logic under test.
    pub only: &'static [&'static str],
    /// Arguments for `cargo test` (cargo-mutants' `-C`): the test targets that must catch a mutant.
    pub test_targets: &'static [&'static str],
    /// Arguments for the test binaries: tests left out (with the reason in [`Run::why`]).
    pub test_binary_args: &'static [&'static str],
    /// Environment for the build and the tests.
    pub env: &'static [(&'static str, &'static str)],
    /// What the run covers and why its tests are chosen so.
    pub why: &'static str,
}

/// Every run, as TESTING.md lists them.
pub const RUNS: &[Run] = &[
    Run {
        name: "common",
        package: "petal-common",
        files: &["crates/common/src/shard.rs"],
        only: &[],
        test_targets: &["--lib"],
        test_binary_args: &[],
        env: &[],
        why: "the hash partition of sharded work (which shard owns which file), its settings from Kubernetes and Slurm",
    },
    Run {
        name: "infer",
        package: "infer",
        files: &["crates/infer/src/lib.rs", "crates/infer/src/tta.rs", "crates/infer/src/resumable.rs"],
        only: &[r"^crates/infer/src/(tta|resumable)\.rs:", r"in Predictor::(top_k|probabilities_of_views|predict_paths|predict_batch)\b"],
        test_targets: &["--lib", "--test=it"],
        test_binary_args: &[],
        env: &[],
        why: "top-k, test-time augmentation's averaging and advice, and resumable prediction",
    },
    Run {
        name: "serve",
        package: "serve",
        files: &["crates/serve/src/batcher.rs", "crates/serve/src/limits.rs"],
        only: &[],
        test_targets: &["--lib", "--test=it"],
        // The page's browser tests drive Chromium through the page only: nothing in the batcher or
        // the limits is reached by them that the API tests do not reach, and they cost a minute.
        test_binary_args: &["--skip", "browser::"],
        env: &[],
        why: "dynamic batching (admission, queue depth, padding) and the per-client limits (concurrency, rate, sweeping)",
    },
    Run {
        name: "train",
        package: "train",
        files: &["crates/train/src/optim.rs"],
        only: &[],
        test_targets: &["--lib"],
        test_binary_args: &[],
        env: &[],
        why: "the optimisers and schedules, checked against PyTorch's own numbers",
    },
    Run {
        name: "checkpoint",
        package: "checkpoint",
        files: &["crates/checkpoint/src/pickle.rs"],
        only: &[],
        test_targets: &["--lib", "--test=it"],
        test_binary_args: &[],
        env: &[],
        why: "the restricted pickle reader of old PyTorch checkpoints",
    },
    Run {
        name: "preprocess",
        package: "preprocess",
        files: &[
            "crates/preprocess/src/transform/mod.rs",
            "crates/preprocess/src/transform/geometry.rs",
            "crates/preprocess/src/transform/jitter.rs",
            "crates/preprocess/src/transform/draw.rs",
        ],
        only: &[],
        test_targets: &["--lib", "--test=it"],
        test_binary_args: &[],
        // Without a Python the pixel tests compare with the committed goldens only, instead of
        // re-running the PyTorch generator for every mutant.
        env: &[("PETAL_PYTHON", "/nonexistent")],
        why: "the image transforms, checked pixel for pixel against torchvision's goldens",
    },
];

fn run_names() -> Vec<&'static str> {
    RUNS.iter().map(|r| r.name).collect()
}

/// The `cargo mutants` arguments of a run (after `cargo`), in the order TESTING.md shows them.
pub fn mutants_args(run: &Run, args: &MutantsArgs) -> Vec<OsString> {
    // A fixed build timeout: one relative to the baseline build is a second when the tree was
    // already built, and every mutant's build would time out.
    let mut out: Vec<OsString> =
        vec!["mutants".into(), "--no-shuffle".into(), "--build-timeout".into(), BUILD_TIMEOUT_S.into(), "-p".into(), run.package.into()];
    for f in run.files {
        out.extend(["--file".into(), (*f).into()]);
    }
    for re in run.only {
        out.extend(["-F".into(), (*re).into()]);
    }
    for t in run.test_targets {
        out.extend(["-C".into(), (*t).into()]);
    }
    out.extend(["--output".into(), format!("target/mutants/{}", run.name).into()]);
    if args.in_place {
        out.push("--in-place".into());
    }
    if args.list {
        out.push("--list".into());
    }
    if let Some(shard) = &args.shard {
        out.extend(["--shard".into(), shard.into()]);
    }
    out.extend(args.extra.iter().cloned());
    if !run.test_binary_args.is_empty() && !args.list {
        // After `--`: cargo test's arguments; after its own `--`: the test binaries'.
        out.extend(["--".into(), "--".into()]);
        out.extend(run.test_binary_args.iter().map(OsString::from));
    }
    out
}

/// Checks that `cargo mutants` is the recorded release, naming how to install it when it is not.
fn check_installed() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let install = format!("install it with `cargo install --locked cargo-mutants@{CARGO_MUTANTS_VERSION}`");
    let out = std::process::Command::new(cargo).args(["mutants", "--version"]).output().context("could not run `cargo mutants --version`")?;
    if !out.status.success() {
        bail!("cargo-mutants is not installed: {install}");
    }
    let version = String::from_utf8_lossy(&out.stdout);
    if !version.contains(CARGO_MUTANTS_VERSION) {
        eprintln!("mutants: {} found; the recorded runs used {CARGO_MUTANTS_VERSION} ({install})", version.trim());
    }
    Ok(())
}

/// `cargo xtask mutants <run>`.
pub fn run(args: &MutantsArgs) -> Result<()> {
    let Some(run) = RUNS.iter().find(|r| r.name == args.run) else {
        bail!("no mutants run named {:?}; the runs are {}", args.run, run_names().join(", "));
    };
    check_installed()?;
    // cargo-mutants makes `mutants.out` inside the output folder, but not the folder itself.
    let out = crate::repo_root().join("target/mutants").join(run.name);
    std::fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    let mut cmd = crate::cargo()?;
    let argv = mutants_args(run, args);
    cmd.args(&argv);
    for (k, v) in run.env {
        cmd.env(k, v);
    }
    let shown: Vec<String> = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("mutants: {} ({}): cargo {}", run.name, run.why, shown.join(" "));
    let status = cmd.status().context("could not start cargo mutants")?;
    // cargo-mutants' exit codes: 0 every mutant caught, 2 some missed, 3 some timed out, 4 the
    // unmutated tree already fails its tests.
    match status.code() {
        Some(0) => Ok(()),
        Some(2) => bail!("mutants: some mutants were not caught: target/mutants/{}/mutants.out/missed.txt lists them", run.name),
        Some(3) => bail!("mutants: some mutants timed out: target/mutants/{}/mutants.out/timeout.txt lists them", run.name),
        Some(4) => bail!("mutants: the tests fail without any mutant; fix them first (target/mutants/{}/mutants.out/log)", run.name),
        _ => bail!("cargo mutants failed ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(run: &str) -> MutantsArgs {
        MutantsArgs { run: run.into(), in_place: false, list: false, shard: None, extra: vec![] }
    }

    #[test]
    fn every_run_names_files_and_packages_that_exist() {
        let root = crate::repo_root();
        for run in RUNS {
            for f in run.files {
                assert!(root.join(f).is_file(), "{}: {f} does not exist", run.name);
            }
            let pkg = run.files[0].split('/').take(2).collect::<Vec<_>>().join("/");
            let pkg_manifest = std::fs::read_to_string(root.join(&pkg).join("Cargo.toml")).unwrap();
            assert!(pkg_manifest.contains(&format!("name = \"{}\"", run.package)), "{}: {pkg} is not package {}", run.name, run.package);
        }
    }

    #[test]
    fn the_command_is_the_documented_one() {
        let serve = RUNS.iter().find(|r| r.name == "serve").unwrap();
        let mut a = args("serve");
        a.in_place = true;
        a.extra = vec!["-F".into(), "admit".into()];
        let got: Vec<String> = mutants_args(serve, &a).iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            got.join(" "),
            "mutants --no-shuffle --build-timeout 900 -p serve --file crates/serve/src/batcher.rs --file crates/serve/src/limits.rs \
             -C --lib -C --test=it --output target/mutants/serve --in-place -F admit -- -- --skip browser::"
        );
        // A listing takes no test arguments.
        let mut l = args("serve");
        l.list = true;
        assert!(!mutants_args(serve, &l).iter().any(|a| a == "--skip"));
    }

    #[test]
    fn the_function_filters_are_valid_regular_expressions_that_match_their_targets() {
        let infer = RUNS.iter().find(|r| r.name == "infer").unwrap();
        let res: Vec<regex::Regex> = infer.only.iter().map(|r| regex::Regex::new(r).unwrap()).collect();
        let matches = |name: &str| res.iter().any(|r| r.is_match(name));
        assert!(matches("crates/infer/src/tta.rs:75:5: replace average_views -> Tensor with Default::default()"));
        assert!(matches("crates/infer/src/lib.rs:405:9: replace < with <= in Predictor::top_k"));
        assert!(!matches("crates/infer/src/lib.rs:345:9: replace > with >= in Predictor::set_temperature"));
        assert!(!matches("crates/infer/src/lib.rs:405:9: replace < with <= in Predictor::top_kx"));
    }
}
