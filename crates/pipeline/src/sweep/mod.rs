//! `petal sweep`: grid or random search over training-config fields on cached inputs (frozen
//! features, or in partial mode the activation maps at the split), with synchronous successive
//! halving, a crash-safe journal and a leaderboard.
//!
//! A sweep file (TOML) names the data and weights, a base `[train]` config over a preset, and a
//! `[space]` whose keys are training-config fields by TOML key (`lr`, `head.dropout`,
//! `unfreeze_blocks`, ...), so a field added to [`TrainConfig`] later is searchable with no change
//! here. Each trial is a config; the cached inputs it trains on are computed once
//! ([`TrialContext::prepare`]) and every trial trains only the head (and in partial mode the
//! trainable blocks), exactly as `petal train` would with that config (same figures, bit for bit).
//!
//! Successive halving: with `halving.rounds = R` and `halving.eta = η`, round `r` (0-based) trains
//! each surviving trial for the first `⌈epochs · η^(r+1−R)⌉` epochs of its own schedule and keeps
//! the best `⌈n/η⌉` by validation accuracy for the next round; the last round runs full
//! schedules. Decisions depend only on finished results (never on timing), so a sweep is
//! reproducible from its file and seed whatever the number of workers.
//!
//! Every finished (trial, round) is written atomically to `<out>/trials/` before it counts; a
//! sweep killed at any moment and started again reuses each journal entry whose digest (the
//! trial's full config, epochs and inputs) still matches, and runs only the rest.
//!
//! Trials run through a [`TrialRunner`]; the `petal` binary runs each in a child process on one
//! libtorch thread (libtorch's random generator is per process, so trials in threads of one
//! process would disturb each other's dropout), [`InProcess`] runs them here one at a time.

mod board;
pub mod space;
mod trial;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use petal_common::{Event, Progress};
use serde::{Deserialize, Serialize};
use train::TrainConfig;

pub use board::{Leaderboard, Row};
pub use space::{Dimension, Space};
pub use trial::{run_one, InProcess, TrialContext};

use crate::config::{merge_train_config, read_table, Preset};
use crate::Error;

/// Test-only: after this many jobs have been journaled, the sweep reports `halted for a test` and
/// stops taking jobs (its workers sleep until the process is killed), so an end-to-end test can
/// `kill -9` it at a known point. Never set it otherwise.
pub const TEST_HALT_ENV: &str = "PETAL_TEST_SWEEP_HALT_AFTER_JOBS";

/// Jobs run (and journaled) by this process, for [`TEST_HALT_ENV`].
static RUN_HERE: AtomicUsize = AtomicUsize::new(0);

/// Set once [`TEST_HALT_ENV`]'s count is reached: no further result is journaled.
static HALTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// How trials are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `trials` random points of the space (distributions or lists).
    #[default]
    Random,
    /// Every combination of the listed values.
    Grid,
}

/// Successive halving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Halving {
    /// Rounds (1: every trial runs its full schedule, no halving).
    pub rounds: usize,
    /// Reduction factor: each round keeps `⌈n/eta⌉` trials and the budget grows `eta`-fold.
    pub eta: usize,
}

impl Default for Halving {
    fn default() -> Self {
        Halving { rounds: 3, eta: 3 }
    }
}

/// The sweep file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepFile {
    /// Dataset root (an ImageFolder with `train/` and `valid/`).
    pub data: Option<PathBuf>,
    /// Pretrained backbone weights.
    pub weights: Option<PathBuf>,
    /// The recipe `[train]` refines.
    pub preset: Preset,
    /// Output folder: journal, leaderboard, plot, best config.
    pub out: PathBuf,
    /// Image and feature caches (shared with `petal train`).
    pub cache_dir: PathBuf,
    /// Leave out undecodable images instead of stopping.
    pub skip_bad: bool,
    /// Grid or random search.
    pub method: Method,
    /// Random search: number of trials.
    pub trials: usize,
    /// Random search: seed of the sampling (each trial's own training seed is `train.seed`).
    pub seed: u64,
    /// Trials run at the same time (0: one per core).
    pub workers: usize,
    /// Successive halving.
    pub halving: Halving,
    /// Base training config over the preset (whole fields, like `petal train --config`).
    pub train: toml::Table,
    /// The search space: training-config field (dotted TOML key) → list of values or distribution.
    pub space: toml::Table,
}

impl Default for SweepFile {
    fn default() -> Self {
        SweepFile {
            data: None,
            weights: None,
            preset: Preset::Default,
            out: "runs/sweep".into(),
            cache_dir: "runs/.cache".into(),
            skip_bad: false,
            method: Method::Random,
            trials: 20,
            seed: 0,
            workers: 0,
            halving: Halving::default(),
            train: toml::Table::new(),
            space: toml::Table::new(),
        }
    }
}

/// One point of the space and the training config it gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 0-based index in the plan.
    pub id: usize,
    /// The searched fields' values.
    pub point: toml::Table,
    /// The base config with `point` applied.
    pub config: TrainConfig,
}

/// A loaded sweep: the file, its space and the planned trials.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The file as read.
    pub file: SweepFile,
    /// Where it was read from (named in errors).
    pub path: PathBuf,
    /// The parsed space.
    pub space: Space,
    /// The base config (preset + `[train]`).
    pub base: TrainConfig,
    /// Every trial, in plan order.
    pub trials: Vec<Trial>,
}

/// One unit of work: a trial trained for its first `epochs` epochs in `round`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialJob {
    /// Trial id.
    pub trial: usize,
    /// 0-based round.
    pub round: usize,
    /// Epochs to train (of the trial's full schedule).
    pub epochs: usize,
}

/// The journal entry of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Trial id.
    pub trial: usize,
    /// 0-based round.
    pub round: usize,
    /// Epochs trained.
    pub epochs: usize,
    /// Digest of what the result was computed from (config, epochs, inputs).
    pub digest: String,
    /// Validation accuracy after each epoch.
    pub valid_acc: Vec<f64>,
    /// Training loss of each epoch.
    pub train_loss: Vec<f64>,
    /// Best validation accuracy over the epochs (the score; `petal train` keeps that checkpoint).
    pub score: f64,
    /// 1-based epoch of the best validation accuracy.
    pub best_epoch: usize,
    /// Seconds the trial took (features loaded from the cache, head trained).
    pub wall_s: f64,
}

/// Runs one job and returns its result (journaling is the scheduler's).
pub trait TrialRunner: Sync {
    /// Trains `job` of `sweep`.
    fn run(&self, sweep: &Sweep, job: &TrialJob) -> Result<TrialResult, Error>;
}

/// What [`run_sweep`] did and wrote.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// The ranked trials.
    pub leaderboard: Leaderboard,
    /// Jobs taken from the journal of an earlier, interrupted or finished run.
    pub reused: usize,
    /// Jobs run now.
    pub ran: usize,
    /// `leaderboard.csv`, `leaderboard.json`, `sweep.png`, `best.toml` in the output folder.
    pub files: Vec<PathBuf>,
}

impl Sweep {
    /// Reads and plans the sweep file `path`: every trial's config is built and validated.
    pub fn load(path: &Path) -> Result<Sweep, Error> {
        let mut table = read_table(path)?;
        let train_table = match table.remove("train") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(Error::config(path, "`train` must be a table ([train])")),
            None => toml::Table::new(),
        };
        let mut file: SweepFile = table.try_into().map_err(|e| Error::config(path, format!("is not a valid sweep file: {e}")))?;
        file.train = train_table.clone();
        for p in [&mut file.data, &mut file.weights] {
            *p = p.take().map(expand_home);
        }
        file.out = expand_home(std::mem::take(&mut file.out));
        file.cache_dir = expand_home(std::mem::take(&mut file.cache_dir));
        let base = merge_train_config(&file.preset.config(), train_table, path)?;
        let space = Space::parse(&file.space, path)?;
        if file.halving.rounds == 0 || (file.halving.eta < 2 && file.halving.rounds > 1) {
            return Err(Error::config(path, "halving needs rounds ≥ 1 and, with several rounds, eta ≥ 2"));
        }
        let points = match file.method {
            Method::Grid => space.grid(path)?,
            Method::Random if file.trials == 0 => return Err(Error::config(path, "trials must be at least 1")),
            Method::Random => space.random(file.trials, file.seed),
        };
        let trials = points
            .into_iter()
            .enumerate()
            .map(|(id, point)| {
                let mut config = space::apply_point(&base, &point, path)?;
                config.name = format!("trial-{id:04}");
                Ok(Trial { id, point, config })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Sweep { file, path: path.to_path_buf(), space, base, trials })
    }

    /// Epochs trial `id` trains in `round`.
    pub fn epochs_in_round(&self, id: usize, round: usize) -> usize {
        let h = self.file.halving;
        let full = self.trials[id].config.recipe.epochs;
        let shrink = (h.eta as f64).powi((h.rounds - 1 - round) as i32);
        ((full as f64 / shrink).ceil() as usize).clamp(1, full)
    }

    /// The journal file of (`trial`, `round`).
    pub fn journal_path(&self, trial: usize, round: usize) -> PathBuf {
        self.file.out.join("trials").join(format!("trial-{trial:04}.round-{round}.json"))
    }

    /// Digest of everything a job's result depends on.
    pub fn digest(&self, job: &TrialJob) -> String {
        let cfg = &self.trials[job.trial].config;
        let key = serde_json::json!({
            "config": cfg,
            "epochs": job.epochs,
            "data": self.file.data,
            "weights": self.file.weights.as_deref().map(petal_common::file_id).and_then(Result::ok),
        });
        petal_common::sha256_hex(key.to_string().as_bytes())
    }

    fn reuse(&self, job: &TrialJob) -> Option<TrialResult> {
        let text = std::fs::read_to_string(self.journal_path(job.trial, job.round)).ok()?;
        let r: TrialResult = serde_json::from_str(&text).ok()?;
        (r.digest == self.digest(job) && r.epochs == job.epochs).then_some(r)
    }

    fn workers(&self) -> usize {
        match self.file.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }
}

/// `~/x` → `$HOME/x` (paths in a sweep file may start with `~`); other paths unchanged.
fn expand_home(p: PathBuf) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p,
    }
}

/// Runs `sweep` with `runner`: every round of successive halving, reusing journaled results,
/// running the rest `workers` at a time; then writes the leaderboard (CSV, JSON), the plot and the
/// best config (TOML that `petal train --config` reads) into the output folder, which is locked
/// while the sweep runs.
///
/// `baseline` (from [`TrialContext::baseline`]) is recorded beside the leaderboard, and the
/// leaderboard says whether the best trial beats it.
pub fn run_sweep(
    sweep: &Sweep,
    runner: &dyn TrialRunner,
    baseline: Option<train::frozen::Baseline>,
    progress: &dyn Progress,
) -> Result<SweepOutcome, Error> {
    let out = &sweep.file.out;
    let trials_dir = out.join("trials");
    std::fs::create_dir_all(&trials_dir).map_err(|e| petal_common::IoError::new(&trials_dir, "create", e))?;
    let _lock = petal_common::RunLock::acquire(out)?;
    let rounds = sweep.file.halving.rounds;
    let mut alive: Vec<usize> = (0..sweep.trials.len()).collect();
    let mut last: Vec<Option<TrialResult>> = vec![None; sweep.trials.len()];
    let (mut reused, mut ran) = (0, 0);
    for round in 0..rounds {
        let jobs: Vec<TrialJob> = alive.iter().map(|&t| TrialJob { trial: t, round, epochs: sweep.epochs_in_round(t, round) }).collect();
        let (done, todo): (Vec<_>, Vec<_>) = jobs.iter().map(|j| (*j, sweep.reuse(j))).partition(|(_, r)| r.is_some());
        reused += done.len();
        ran += todo.len();
        let mut results: Vec<TrialResult> = done.into_iter().filter_map(|(_, r)| r).collect();
        let msg = format!("round {}/{rounds}: {} trials ({} from the journal)", round + 1, jobs.len(), results.len());
        progress.event(Event::Message(&msg));
        let todo: Vec<TrialJob> = todo.into_iter().map(|(j, _)| j).collect();
        results.extend(run_jobs(sweep, runner, &todo, results.len(), jobs.len(), progress)?);
        results.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.trial.cmp(&b.trial)));
        let keep = if round + 1 < rounds { results.len().div_ceil(sweep.file.halving.eta) } else { results.len() };
        alive = results[..keep].iter().map(|r| r.trial).collect();
        for r in results {
            let t = r.trial;
            last[t] = Some(r);
        }
    }
    let mut leaderboard = Leaderboard::new(sweep, last.into_iter().flatten().collect());
    leaderboard.baseline = baseline;
    let files = leaderboard.write(sweep)?;
    Ok(SweepOutcome { leaderboard, reused, ran, files })
}

/// Runs `jobs` on the sweep's workers, journaling each result as it finishes.
fn run_jobs(
    sweep: &Sweep,
    runner: &dyn TrialRunner,
    jobs: &[TrialJob],
    already: usize,
    total: usize,
    progress: &dyn Progress,
) -> Result<Vec<TrialResult>, Error> {
    let next = AtomicUsize::new(0);
    let halt_after: Option<usize> = std::env::var(TEST_HALT_ENV).ok().and_then(|v| v.parse().ok());
    let results = Mutex::new(Vec::new());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    progress.event(Event::Start { task: "trials", total: total as u64 });
    progress.event(Event::Advance { done: already as u64, note: None });
    let work = || loop {
        if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
            return;
        }
        let Some(job) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) else { return };
        let outcome = runner.run(sweep, job);
        if HALTED.load(Ordering::SeqCst) {
            sleep_forever();
        }
        let outcome = outcome.and_then(|r| {
            let text = serde_json::to_string_pretty(&r).map_err(|e| Error::Inputs(e.to_string()))?;
            petal_common::write_atomic(&sweep.journal_path(job.trial, job.round), text.as_bytes())?;
            Ok(r)
        });
        match outcome {
            Ok(r) => {
                let mut all = results.lock().unwrap_or_else(|e| e.into_inner());
                let note = format!("trial {} {:.2}%", r.trial, 100.0 * r.score);
                all.push(r);
                progress.event(Event::Advance { done: (already + all.len()) as u64, note: Some(&note) });
                if halt_after.is_some_and(|h| RUN_HERE.fetch_add(1, Ordering::SeqCst) + 1 >= h) {
                    HALTED.store(true, Ordering::SeqCst);
                    progress.event(Event::Message("halted for a test"));
                    drop(all);
                    sleep_forever();
                }
            }
            Err(e) => {
                let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                f.get_or_insert(e);
            }
        }
    };
    let work = &work;
    std::thread::scope(|s| {
        for _ in 0..sweep.workers().min(jobs.len()) {
            s.spawn(work);
        }
    });
    progress.event(Event::Finish { summary: None });
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(results.into_inner().unwrap_or_else(|e| e.into_inner()))
}
