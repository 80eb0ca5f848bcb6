//! The leaderboard of a sweep and the files it is written to.

use std::path::PathBuf;

use serde::Serialize;

use super::space::{render, Dimension};
use super::{Sweep, TrialResult};
use crate::Error;

/// One trial on the leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// 1-based rank.
    pub rank: usize,
    /// Trial id.
    pub trial: usize,
    /// Rounds of successive halving the trial reached (the last one is the full schedule).
    pub rounds: usize,
    /// Epochs trained in its last round.
    pub epochs: usize,
    /// Best validation accuracy in its last round.
    pub valid_acc: f64,
    /// Epoch of that accuracy.
    pub best_epoch: usize,
    /// Seconds of its last round.
    pub wall_s: f64,
    /// The searched fields' values.
    pub point: toml::Table,
}

/// Trials ranked by the round they reached, then by score, then by id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    /// Best first.
    pub rows: Vec<Row>,
    /// The L-BFGS logistic regression on the same features, when the sweep computed it.
    pub baseline: Option<train::frozen::Baseline>,
}

impl Leaderboard {
    /// Ranks the last result of each trial.
    pub fn new(sweep: &Sweep, mut last: Vec<TrialResult>) -> Leaderboard {
        last.sort_by(|a, b| b.round.cmp(&a.round).then(b.score.total_cmp(&a.score)).then(a.trial.cmp(&b.trial)));
        let rows = last
            .into_iter()
            .enumerate()
            .map(|(i, r)| Row {
                rank: i + 1,
                trial: r.trial,
                rounds: r.round + 1,
                epochs: r.epochs,
                valid_acc: r.score,
                best_epoch: r.best_epoch,
                wall_s: r.wall_s,
                point: sweep.trials[r.trial].point.clone(),
            })
            .collect();
        Leaderboard { rows, baseline: None }
    }

    /// The winner.
    pub fn best(&self) -> Option<&Row> {
        self.rows.first()
    }

    /// Writes `leaderboard.csv`, `leaderboard.json`, `sweep.png` and `best.toml` into the sweep's
    /// output folder (each atomically) and returns their paths.
    pub fn write(&self, sweep: &Sweep) -> Result<Vec<PathBuf>, Error> {
        let out = &sweep.file.out;
        let keys: Vec<&String> = sweep.space.dims.iter().map(|(k, _)| k).collect();
        let mut header = vec!["rank", "trial", "rounds", "epochs", "valid_acc", "best_epoch", "seconds"];
        header.extend(keys.iter().map(|k| k.as_str()));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = vec![
                    r.rank.to_string(),
                    r.trial.to_string(),
                    r.rounds.to_string(),
                    r.epochs.to_string(),
                    format!("{:.6}", r.valid_acc),
                    r.best_epoch.to_string(),
                    format!("{:.2}", r.wall_s),
                ];
                v.extend(keys.iter().map(|k| r.point.get(*k).map(value_text).unwrap_or_default()));
                v
            })
            .collect();
        let csv = out.join("leaderboard.csv");
        report::write_csv(&csv, &header, &rows)?;
        let best = self.best().ok_or_else(|| Error::Inputs(format!("{}: no trial finished", sweep.path.display())))?;
        let mut best_cfg = sweep.trials[best.trial].config.clone();
        best_cfg.name = "sweep-best".into();
        let json = out.join("leaderboard.json");
        let doc = serde_json::json!({
            "sweep": sweep.path,
            "method": sweep.file.method,
            "seed": sweep.file.seed,
            "halving": sweep.file.halving,
            "space": keys,
            "best": { "trial": best.trial, "valid_acc": best.valid_acc, "point": render(&best.point), "config": best_cfg },
            "baseline": self.baseline,
            "beats_baseline": self.baseline.as_ref().map(|b| best.valid_acc > b.valid_acc),
            "rows": self.rows,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Inputs(e.to_string()))?;
        petal_common::write_atomic(&json, text.as_bytes())?;
        let toml_path = out.join("best.toml");
        let head = format!(
            "# Best trial {} of {} ({:.2} % valid top-1, {}): `petal train --config` reads this file.\n",
            best.trial,
            sweep.path.display(),
            100.0 * best.valid_acc,
            render(&best.point)
        );
        let head = match &self.baseline {
            Some(b) => format!(
                "{head}# Baseline: an L-BFGS multinomial logistic regression (L2 {:e}) on the same features scores {:.2} %; the best trial {}.\n",
                b.l2,
                100.0 * b.valid_acc,
                if best.valid_acc > b.valid_acc {
                    format!("beats it by {:.2} points", 100.0 * (best.valid_acc - b.valid_acc))
                } else {
                    "does NOT beat it".to_string()
                }
            ),
            None => head,
        };
        let body = toml::to_string_pretty(&best_cfg).map_err(|e| Error::Inputs(e.to_string()))?;
        petal_common::write_atomic(&toml_path, format!("{head}{body}").as_bytes())?;
        let png = out.join("sweep.png");
        let title = format!("{}: valid top-1 of {} trials (orange: reached the last round)", sweep.path.display(), self.rows.len());
        report::plot_scatter(&self.panels(sweep), &title, "valid top-1 (%)", &png)?;
        Ok(vec![csv, json, png, toml_path])
    }

    /// One scatter panel per dimension of the space.
    fn panels(&self, sweep: &Sweep) -> Vec<report::ScatterPanel> {
        let last_round = sweep.file.halving.rounds;
        sweep
            .space
            .dims
            .iter()
            .map(|(key, dim)| {
                let values: Vec<Option<&toml::Value>> = self.rows.iter().map(|r| r.point.get(key)).collect();
                let numeric = values.iter().all(|v| v.is_some_and(|v| number(v).is_some()));
                let (axis, xs): (report::XAxis, Vec<f64>) = if numeric {
                    let axis = if matches!(dim, Dimension::LogUniform(..)) { report::XAxis::Log } else { report::XAxis::Linear };
                    (axis, values.iter().map(|v| v.and_then(number).unwrap_or(f64::NAN)).collect())
                } else {
                    let labels: Vec<String> = match dim {
                        Dimension::Choice(c) => c.iter().map(value_text).collect(),
                        _ => Vec::new(),
                    };
                    let xs = values
                        .iter()
                        .map(|v| v.and_then(|v| labels.iter().position(|l| *l == value_text(v))).map_or(f64::NAN, |i| i as f64))
                        .collect();
                    (report::XAxis::Categories(labels), xs)
                };
                let points = self
                    .rows
                    .iter()
                    .zip(xs)
                    .map(|(r, x)| report::ScatterPoint { x, y: 100.0 * r.valid_acc, emphasis: r.rounds == last_round })
                    .collect();
                report::ScatterPanel { name: key.clone(), axis, points }
            })
            .collect()
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    v.as_float().or_else(|| v.as_integer().map(|i| i as f64))
}

/// A value as it reads in a table: strings without quotes, the rest as TOML.
fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
