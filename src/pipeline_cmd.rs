//! `petal pipeline`: the command-line front of [`pipeline::run_pipeline`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::cli::OverrideArgs;
use crate::progress::Bars;

/// Arguments of `petal pipeline`.
#[derive(Args)]
pub struct PipelineArgs {
    /// The pipeline config (TOML; see examples/pipeline.toml). Flags override it; without it the
    /// defaults apply: the project's best recipe, the same as `petal train`'s.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset root (overrides the config's `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Pretrained weights (overrides the config's `weights`).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// JSON file mapping class folders to display names (overrides the config's `category_names`;
    /// default: cat_to_name.json in the data root, else in its parent).
    #[arg(long)]
    category_names: Option<PathBuf>,
    /// The recipe under the config's [train] (overrides its `preset`): default or seed.
    #[arg(long, value_enum)]
    preset: Option<pipeline::Preset>,
    /// Parent folder of run folders.
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Run every stage even if its inputs are unchanged.
    #[arg(long)]
    force: bool,
    /// Replace a trained model of the same run name that came from other inputs (without it that
    /// is an error; the pipeline's own unchanged stages are skipped either way; a run folder in
    /// use by another petal process is always an error, naming its pid).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    overrides: OverrideArgs,
}

/// Runs the pipeline.
pub fn run(a: &PipelineArgs) -> Result<()> {
    let o = pipeline::PipelineOverrides {
        data: a.data.clone(),
        weights: a.weights.clone(),
        category_names: a.category_names.clone(),
        preset: a.preset,
        runs_dir: a.runs_dir.clone(),
        train: a.overrides.to_overrides(),
    };
    let config = pipeline::load_pipeline_config(a.config.as_deref(), &o)?;
    let job = pipeline::PipelineRun { config, force: a.force, overwrite: a.overwrite };
    let out = pipeline::run_pipeline(&job, &Bars::default()).context("pipeline")?;
    let line = |who: &str, e: &infer::EvalReport| {
        let kind = match out.role(&e.split) {
            pipeline::SplitRole::HeldOut => " (held out)",
            pipeline::SplitRole::Selection => " (selection score)",
            pipeline::SplitRole::Other => "",
        };
        println!("{who}{}{kind}: top-1 {:.2}% (± {:.2})  top-5 {:.2}%", e.split, 100.0 * e.top1, 100.0 * e.top1_standard_error(), 100.0 * e.top5);
    };
    out.evaluations.iter().for_each(|e| line("", e));
    out.final_evaluations.iter().for_each(|e| line("final fit, ", e));
    println!("model: {}", out.model.display());
    Ok(())
}
