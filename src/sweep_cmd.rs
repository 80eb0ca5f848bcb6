//! `petal sweep`: the command-line front of [`pipeline::sweep`]. Each trial runs in a child
//! process (this binary, `--trial`) on one libtorch thread, `workers` at a time.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use pipeline::sweep::{self, Sweep, TrialContext, TrialJob, TrialResult, TrialRunner};

use crate::progress::Bars;

/// Arguments of `petal sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// The sweep file (TOML; see examples/sweep.toml).
    #[arg(long)]
    config: PathBuf,
    /// Trials run at the same time (overrides the file's `workers`; 0: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Internal: run this one trial here and print its result as JSON (used by the workers).
    #[arg(long, hide = true, requires = "round")]
    trial: Option<usize>,
    /// Internal: the round of `--trial`.
    #[arg(long, hide = true)]
    round: Option<usize>,
}

/// Runs `petal sweep`.
pub fn run(a: &SweepArgs) -> Result<()> {
    let mut sweep = Sweep::load(&a.config).context("petal sweep")?;
    if let Some(w) = a.workers {
        sweep.file.workers = w;
    }
    if let (Some(trial), Some(round)) = (a.trial, a.round) {
        return child(&sweep, trial, round);
    }
    let ctx = TrialContext::open(&sweep).context("petal sweep")?;
    let h = sweep.file.halving;
    eprintln!(
        "{}: {} trials ({:?} search over {}), {} round(s) of successive halving (eta {}), output in {}",
        a.config.display(),
        sweep.trials.len(),
        sweep.file.method,
        sweep.space.dims.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
        h.rounds,
        h.eta,
        sweep.file.out.display()
    );
    let t0 = Instant::now();
    let secs = ctx.prepare(&sweep, &Bars::default()).context("computing the features the trials share")?;
    eprintln!("features ready ({secs:.1} s computed, the rest from the cache)");
    let baseline = ctx.baseline(&sweep, &Bars::default()).context("fitting the logistic-regression baseline")?;
    if let Some(b) = &baseline {
        eprintln!(
            "baseline: L-BFGS multinomial logistic regression on the same features, L2 {:e} chosen on the validation split: {:.2}% ({:.1} s)",
            b.l2,
            100.0 * b.valid_acc,
            b.seconds
        );
    }
    let runner = Children { exe: std::env::current_exe().context("locating the petal binary")?, config: a.config.clone() };
    let outcome = sweep::run_sweep(&sweep, &runner, baseline.clone(), &Bars::default()).context("petal sweep")?;
    println!("{:>4} {:>5} {:>6} {:>6} {:>8}  point", "rank", "trial", "rounds", "epochs", "valid");
    for r in outcome.leaderboard.rows.iter().take(10) {
        let point = sweep::space::render(&r.point);
        println!("{:>4} {:>5} {:>6} {:>6} {:>7.2}%  {point}", r.rank, r.trial, r.rounds, r.epochs, 100.0 * r.valid_acc);
    }
    if let (Some(b), Some(best)) = (&baseline, outcome.leaderboard.best()) {
        let verdict = if best.valid_acc > b.valid_acc { "beats" } else { "does NOT beat" };
        println!("the best trial ({:.2}%) {verdict} the logistic-regression baseline ({:.2}%)", 100.0 * best.valid_acc, 100.0 * b.valid_acc);
    }
    println!(
        "{} jobs run, {} reused from the journal, {:.1} s; wrote {}",
        outcome.ran,
        outcome.reused,
        t0.elapsed().as_secs_f64(),
        outcome.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// A worker process: one trial on one thread, its result as one JSON line on stdout.
fn child(sweep: &Sweep, trial: usize, round: usize) -> Result<()> {
    let result = sweep::run_one(sweep, trial, round).with_context(|| format!("sweep trial {trial}, round {round}"))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Runs each job as `petal sweep --config F --trial T --round R` in a child process.
struct Children {
    exe: PathBuf,
    config: PathBuf,
}

impl Children {
    fn spawn(&self, job: &TrialJob) -> std::io::Result<std::process::Output> {
        Command::new(&self.exe)
            .args(["sweep", "--config"])
            .arg(&self.config)
            .args(["--trial", &job.trial.to_string(), "--round", &job.round.to_string()])
            .env("OMP_NUM_THREADS", "1")
            .output()
    }
}

impl TrialRunner for Children {
    fn run(&self, sweep: &Sweep, job: &TrialJob) -> Result<TrialResult, pipeline::Error> {
        let fail = |detail: String| pipeline::Error::Trial { trial: job.trial, detail };
        let out = self.spawn(job).map_err(|e| fail(format!("cannot start {}: {e}", self.exe.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(fail(format!("the worker failed ({}): {}", out.status, stderr.trim())));
        }
        let line = stdout.lines().last().unwrap_or("");
        let r: TrialResult = serde_json::from_str(line).map_err(|e| fail(format!("unreadable worker answer ({e}): {line:?}")))?;
        if r.digest != sweep.digest(job) {
            return Err(fail(format!("the worker computed another config (is {} being edited?)", self.config.display())));
        }
        Ok(r)
    }
}
