//! The petal job as a library: everything the `petal` command line does, callable from Rust.
//!
//! * [`config`]: training configs from a [`Preset`], a TOML file and typed [`Overrides`]; the
//!   pipeline config ([`PipelineConfig`]) around one;
//! * [`stages`]: the stages one at a time: dataset discovery ([`discover`]), image caches
//!   ([`cache_splits`]), a claimed run folder ([`claim_run`]: locked, never silently overwritten),
//!   training ([`TrainJob`]), evaluation ([`evaluate_checkpoint`]) and prediction helpers;
//! * [`batch`]: batch prediction as a batch job: sharded over processes or machines, inputs and
//!   outputs on disk or object storage, and the merge of the shards' parts;
//! * [`run_pipeline`]: preprocess → train → evaluate → predict a sample → run README, with a stamp
//!   per stage so a re-run skips the stages whose inputs did not change;
//! * [`sweep`]: grid or random search over training-config fields on cached features, with
//!   successive halving, a crash-safe journal, a leaderboard and the best config as TOML.
//!
//! The crate never prints: progress goes to a [`Progress`] (bars and lines are the binary's
//! business), results come back as values.

#![warn(missing_docs)]

mod advice;
pub mod batch;
pub mod config;
mod error;
mod files;
mod predict;
mod run;
pub mod stages;
pub mod sweep;

pub use advice::recommend_tta;
pub use config::{load_pipeline_config, load_train_config, Overrides, PipelineConfig, PipelineOverrides, Preset};
pub use error::Error;
pub use files::{convert_checkpoint, merge, Converted, Merged};
pub use petal_common::{Event, Progress, Silent};
pub use predict::{PredictJob, PredictOutcome, Written, DEFAULT_OUTPUT};
pub use run::{run_pipeline, PipelineOutcome, PipelineRun, SplitRole};
pub use stages::{
    cache_splits, claim_run, discover, evaluate_checkpoint, expand_inputs, write_predictions_csv, Existing, SplitCache, TrainJob, TrainReport,
};
