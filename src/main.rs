//! `petal`: the command-line front end that wires the stage crates together.
//!
//! Each subcommand is one stage and runs alone; `pipeline` runs them in order from one TOML config.
//! Libraries return typed errors; this binary adds the context a user needs (which stage, which file).

mod cli;
mod pipeline_cmd;
mod progress;
mod serve_cmd;
mod sweep_cmd;

use std::path::Path;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use cli::*;
use progress::Bars;

fn main() {
    // Warnings, and the progress of resumable work (what an interrupted run left to reuse).
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,checkpoint::chunks=info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if let Err(e) = run() {
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text is already there
/// (library errors often include their source's message, which `{:#}` would then print twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
}

fn run() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Preprocess(a) => preprocess_cmd(&a),
        Cmd::Train(a) => train_cmd(&a),
        Cmd::Evaluate(a) => evaluate_cmd(&a),
        Cmd::Predict(a) => predict_cmd(&a),
        Cmd::Checkpoint(CheckpointCmd::Inspect { file, json }) => {
            let s = checkpoint::inspect(&file).with_context(|| format!("inspecting {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("{s}");
            }
            Ok(())
        }
        Cmd::Checkpoint(CheckpointCmd::Convert { input, output, legacy }) => {
            let converted = pipeline::convert_checkpoint(&input, &output, &legacy.options()?)
                .with_context(|| format!("converting {} to {}", input.display(), output.display()))?;
            match converted {
                pipeline::Converted::Legacy(r, summary) => {
                    eprintln!("{} ({}), head from the {}; {} classes", r.arch, r.arch_from, r.head.source, r.classes);
                    r.assumptions.iter().for_each(|a| eprintln!("assumed: {a}"));
                    println!("{summary}");
                }
                pipeline::Converted::Current(summary) => println!("{summary}"),
            }
            Ok(())
        }
        Cmd::ImportWeights(a) => {
            let arch = &a.arch;
            let c = model::arch_registry::convert_pretrained(arch, &a.input, &a.output)
                .with_context(|| format!("converting {} ({}) into {}", a.input.display(), arch, a.output.display()))?;
            eprintln!(
                "wrote {} ({} backbone tensors; dropped the source's classifier keys {:?})",
                a.output.display(),
                c.tensors,
                c.dropped_head_keys
            );
            Ok(())
        }
        Cmd::Pipeline(a) => pipeline_cmd::run(&a),
        Cmd::Merge(a) => merge_cmd(&a),
        Cmd::Sweep(a) => sweep_cmd::run(&a),
        Cmd::Quantize(a) => quantize_cmd(&a),
        Cmd::Serve(a) => serve_cmd::run(a),
        Cmd::Export { checkpoint, format, out } => {
            let e = export::export(&checkpoint, format, &out).with_context(|| format!("exporting {} to {format}", checkpoint.display()))?;
            println!("wrote {} ({} bytes, output {:?}) and {}", e.path.display(), e.bytes, e.info.output_name, e.sidecar.display());
            Ok(())
        }
    }
}

/// Discovers the dataset and prints its summary.
fn discover(d: &DataArgs) -> Result<preprocess::Dataset> {
    let ds = pipeline::discover(&d.data, d.skip_bad, d.category_names.as_deref())
        .with_context(|| format!("reading the dataset at {}", d.data.display()))?;
    eprintln!("{}", ds.summary());
    Ok(ds)
}

fn preprocess_cmd(a: &PreprocessArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    if a.summary_only {
        return Ok(());
    }
    let tcfg = preprocess::TransformConfig { resize_size: a.resize, ..Default::default() };
    for c in pipeline::cache_splits(&ds, &a.cache_dir, &tcfg, a.data.skip_bad, &Bars::default()).context("caching images")? {
        eprintln!("{}: image cache ready ({} images, {:.1}s)", c.split, c.images, c.seconds);
    }
    Ok(())
}

fn train_cmd(a: &TrainArgs) -> Result<()> {
    let cfg = pipeline::load_train_config(a.config.as_deref(), a.preset, &a.overrides.to_overrides())?;
    if a.print_config {
        println!("{}", toml::to_string_pretty(&cfg)?);
        return Ok(());
    }
    if !a.extract_only && (a.shard.shard.is_some() || a.shard.shards.is_some()) {
        anyhow::bail!("--shard and --shards split the feature extraction: add --extract-only");
    }
    let existing = match (a.resume, a.overwrite) {
        (true, _) => pipeline::Existing::Resume,
        (_, true) => pipeline::Existing::Overwrite,
        _ => pipeline::Existing::Refuse,
    };
    let job = pipeline::TrainJob {
        data: a.data.data.clone(),
        config: cfg,
        weights: a.weights.clone(),
        init_from: a.init_from.clone(),
        runs_dir: a.runs_dir.clone(),
        cache_dir: a.cache_dir.clone(),
        skip_bad: a.data.skip_bad,
        category_names: a.data.category_names.clone(),
        existing,
    };
    if a.extract_only {
        return extract_cmd(&job, &a.shard);
    }
    let report = job.run_and_report(a.measure_tta, &Bars::default()).context("training")?;
    let out = &report.outcome;
    let best = &out.history[out.best_epoch.saturating_sub(1)];
    eprintln!(
        "done in {:.1}s (features {:.1}s); best epoch {}, {} acc {}; checkpoints in {}",
        out.wall_s,
        out.feature_s,
        out.best_epoch,
        out.selected_on.as_deref().unwrap_or("valid"),
        best.valid_acc.map(|v| format!("{:.2}%", 100.0 * v)).unwrap_or_else(|| "–".into()),
        out.run_dir.display()
    );
    if let Some(f) = &out.final_fit {
        eprintln!("final fit: {} epochs on {} images in {:.1}s: {}", f.epochs, f.images, f.wall_s, f.checkpoint.display());
    }
    if let Some(c) = &report.calibration {
        eprintln!("calibration: temperature {:.3} on {} (ECE {:.2}% -> {:.2}%)", c.temperature, c.split, 100.0 * c.ece.0, 100.0 * c.ece.1);
    }
    for r in &report.held_out {
        eprintln!("held out: {r}");
    }
    Ok(())
}

/// `petal train --extract-only [--shard K/N]`: the caches (or this shard's parts of them), no training.
fn extract_cmd(job: &pipeline::TrainJob, shard: &ShardArgs) -> Result<()> {
    let shard = shard.resolve()?;
    let out = job.extract(shard.map(|s| (s, command_without_shard())), &Bars::default()).context("extracting features")?;
    for p in &out.parts {
        let how = if p.kept { "kept from an earlier run".to_string() } else { format!("{:.1}s", p.seconds) };
        eprintln!("{}: {} of {} images ({how})", p.part.display(), p.images, p.total);
    }
    match shard {
        Some(s) => eprintln!(
            "shard {s}: parts of {} caches written in {:.1}s (features {:.1}s); join them with: petal merge {}",
            out.caches,
            out.wall_s,
            out.feature_s,
            job.cache_dir.display()
        ),
        None => eprintln!("{} caches ready in {} ({:.1}s, features {:.1}s)", out.caches, job.cache_dir.display(), out.wall_s, out.feature_s),
    }
    Ok(())
}

fn evaluate_cmd(a: &EvaluateArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    let out = a.out.clone().or_else(|| a.checkpoint.parent().map(Path::to_path_buf));
    let opts = infer::EvalOptions {
        device: a.device.device()?,
        out_dir: out,
        tta: a.tta,
        runtime: a.runtime,
        precision: a.precision,
        graph_cache: petal_common::onnxruntime::graph_cache(),
        ..Default::default()
    };
    let r = pipeline::evaluate_checkpoint(&a.checkpoint, &ds, &a.split, &opts, a.data.category_names.as_deref(), &Bars::default())
        .with_context(|| format!("evaluating {}", a.checkpoint.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{r}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn quantize_cmd(a: &QuantizeArgs) -> Result<()> {
    let ds = discover(&a.data)?;
    let opts = infer::QuantizeOptions {
        calibration_images: a.calibration_images,
        max_loss_points: a.max_loss,
        batch_size: a.batch_size,
        graph_cache: petal_common::onnxruntime::graph_cache(),
        bias_correction: !a.no_bias_correction,
        ..Default::default()
    };
    let r = infer::quantize(&a.checkpoint, &ds, &opts, &Bars::default()).with_context(|| format!("quantizing {}", a.checkpoint.display()))?;
    if a.json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("ranges");
            o.remove("weight_shifts");
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    eprintln!(
        "int8 calibrated on {} {} images; {} top-1: fp32 {:.2} %, int8 {:.2} % ({:+.2} points; same top class as fp32 on {:.2} %); backbone {:.1} -> {:.1} img/s ({:.2}x)",
        r.calibration_images,
        r.calibration_split,
        r.eval_split,
        r.fp32_top1,
        r.int8_top1,
        -r.loss_points,
        r.top1_agreement.unwrap_or(f64::NAN),
        r.fp32_img_s,
        r.int8_img_s,
        r.int8_img_s / r.fp32_img_s.max(1e-9)
    );
    if r.accepted {
        eprintln!("int8 is now the default of {} (--precision auto); --precision fp32 runs the reference", a.checkpoint.display());
    } else {
        eprintln!(
            "int8 refused as the default of {}: it loses {:.2} points, more than the {:.2} allowed; recorded, and run only with --precision int8",
            a.checkpoint.display(),
            r.loss_points,
            r.max_loss_points
        );
    }
    Ok(())
}

fn predict_cmd(a: &PredictArgs) -> Result<()> {
    let job = pipeline::PredictJob {
        checkpoint: a.checkpoint.clone(),
        legacy: a.legacy.options()?,
        device: a.device.device()?,
        runtime: a.runtime,
        precision: a.precision,
        category_names: a.category_names.clone(),
        tta: a.tta,
        inputs: a.inputs.clone(),
        out: a.jsonl.clone().or_else(|| a.csv.clone()),
        shard: a.shard.resolve()?,
        top_k: a.top_k,
        batch_size: a.batch_size,
        chunk_images: a.chunk_images,
        staging: a.staging.clone(),
        command: command_without_shard(),
    };
    let pb = ProgressBar::hidden();
    pb.set_style(ProgressStyle::with_template("predict [{bar:30}] {pos}/{len} {per_sec}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let on_progress = |done: usize, total: usize| {
        if total > a.batch_size && pb.is_hidden() {
            pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        }
        pb.set_length(total as u64);
        pb.set_position(done as u64);
    };
    let r = job.run(on_progress).with_context(|| format!("predicting with {}", a.checkpoint.display()))?;
    pb.finish_and_clear();
    match (&r.written, job.shard) {
        (Some(w), Some(s)) => eprintln!("shard {s}: {} of {} images; wrote {}", r.predictions.len(), w.total_inputs, w.path),
        (Some(w), None) => eprintln!("wrote {}", w.path),
        (None, _) => {}
    }
    let source = if a.tta.is_some() { "--tta" } else { "the checkpoint's default" };
    let per_image = 1e3 * r.seconds / r.predictions.len().max(1) as f64;
    let n = r.predictions.len();
    eprintln!(
        "tta {} ({source}): {} forward pass(es) per image; {n} image(s) in {:.2} s ({per_image:.1} ms per image)",
        r.tta,
        r.tta.views(),
        r.seconds
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r.predictions)?);
    } else {
        for p in &r.predictions {
            println!("{}", p.path.display());
            for (i, c) in p.top.iter().enumerate() {
                println!("  {}. {:<28} {:6.2}%  [{}]", i + 1, c.name, 100.0 * c.prob, c.folder);
            }
        }
    }
    if let Some(plot) = &a.plot {
        let first = r.predictions.first().context("no image to plot in this shard")?;
        let img = preprocess::decode_rgb(&first.path)?;
        let top: Vec<(String, f32)> = first.top.iter().map(|c| (c.name.clone(), c.prob)).collect();
        let title = first.top.first().map(|c| c.name.clone()).unwrap_or_default();
        report::plot_prediction(&img, &title, &top, plot).with_context(|| format!("drawing {}", plot.display()))?;
        eprintln!("wrote {}", plot.display());
    }
    Ok(())
}

fn merge_cmd(a: &MergeArgs) -> Result<()> {
    let merged = pipeline::merge(&a.output).with_context(|| format!("merging the parts of {}", a.output))?;
    match &merged {
        pipeline::Merged::Output(r) => eprintln!("merged {} parts ({} images, {} bytes) into {}", r.parts, r.inputs, r.bytes, r.written),
        pipeline::Merged::Caches { merged, .. } => {
            for m in merged {
                eprintln!("merged {} parts ({} images of {}) into {}", m.parts, m.images, m.kind, m.cache.display());
            }
        }
    }
    merged.failures().map_or(Ok(()), |e| Err(e.into()))
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    /// An error whose message already holds its source's, as library errors often do.
    #[derive(Debug)]
    struct Opening(std::io::Error);

    impl std::fmt::Display for Opening {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "w.pth: opening: {}", self.0)
        }
    }

    impl std::error::Error for Opening {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = Err::<(), _>(Opening(io)).context("converting w.pth").expect_err("an error");
        assert_eq!(super::error_chain(&e), "converting w.pth: w.pth: opening: No such file or directory");
        assert_eq!(format!("{e:#}"), "converting w.pth: w.pth: opening: No such file or directory: No such file or directory");
    }
}
