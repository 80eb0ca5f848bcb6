//! Forward throughput (images/s) of densenet121 and efficientnet_lite0 at batch 32 with random
//! weights: frozen backbone, channels_last, batch norm folded, `no_grad`, eval mode.
//!
//! `cargo run --release -p model --example bench_forward -- [--json] [--smoke] [--batches N]
//! [--warmup N] [--batch B] [--size S] [--threads T] [--arch NAME]... [--all] [--plain]`
//! Each architecture runs at its own input size (`Arch::input_size`: 224, Lite1 240, Lite2 260)
//! unless `--size` is given. `--all`: every architecture issue 11 added (VGG-11/13/16/19 with and
//! without BN, ResNet-18/34/50/101/152, AlexNet, EfficientNet-Lite1/2), as `bench/forward_pytorch.py --all`.
//! With `--json` the last stdout line is `{"impl":"tch","batch":32,"batches":3,"threads":2,
//! "densenet121":<img/s>,"efficientnet_lite0":<img/s>}` (same keys as `bench/forward_pytorch.py`).
//! `--smoke`: one batch of 2 images of 64×64, no warm-up.

use std::time::Instant;

use model::{freeze_backbone, Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Flags of this benchmark (plus `--json`/`--smoke`, see `benchkit`).
#[derive(clap::Args)]
struct Args {
    /// Timed batches per architecture.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    batches: u32,
    /// Untimed batches first.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Images per batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(i64).range(1..))]
    batch: i64,
    /// Image side in pixels (default: each architecture's own input size).
    #[arg(long, value_parser = clap::value_parser!(i64).range(32..))]
    size: Option<i64>,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Architectures to measure (repeatable; default densenet121 and efficientnet_lite0).
    #[arg(long = "arch", value_parser = parse_arch)]
    archs: Vec<Arch>,
    /// Every architecture added by issue 11 (instead of `--arch`).
    #[arg(long, conflicts_with = "archs")]
    all: bool,
    /// Measure the network as built: no freezing, channels_last or batch-norm folding.
    #[arg(long)]
    plain: bool,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    s.parse().map_err(|e: model::Error| e.to_string())
}

fn bench(arch: &Arch, a: &Args, (batch, batches, warmup, size): (i64, u32, u32, i64)) -> Result<f64, model::Error> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let mut m = Classifier::new(&vs.root(), arch, &HeadConfig::default(), 102)?;
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu));
    if !a.plain {
        freeze_backbone(&vs, arch, 0);
        m.set_channels_last(true)?;
        m.fold_batchnorm();
    }
    let run = || tch::no_grad(|| m.forward_t(&x, false));
    for _ in 0..warmup {
        let _ = run();
    }
    let t = Instant::now();
    for _ in 0..batches {
        let _ = run();
    }
    Ok((batches as i64 * batch) as f64 / t.elapsed().as_secs_f64())
}

fn run(a: &Args, common: &benchkit::Common) -> benchkit::Result<serde_json::Value> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let archs = if a.all {
        use Arch::*;
        vec![
            Vgg11,
            Vgg11Bn,
            Vgg13,
            Vgg13Bn,
            Vgg16,
            Vgg16Bn,
            Vgg19,
            Vgg19Bn,
            ResNet18,
            ResNet34,
            ResNet50,
            ResNet101,
            ResNet152,
            AlexNet,
            EfficientNetLite1,
            EfficientNetLite2,
        ]
    } else if a.archs.is_empty() {
        vec![Arch::DenseNet121, Arch::EfficientNetLite0]
    } else {
        a.archs.clone()
    };
    let (batch, batches, warmup) = if common.smoke { (2, 1, 0) } else { (a.batch, a.batches, a.warmup) };
    let mut report = serde_json::json!({
        "impl": "tch",
        "batch": batch,
        "batches": batches,
        "threads": tch::get_num_threads(),
    });
    for arch in &archs {
        let size = if common.smoke { 64 } else { a.size.unwrap_or(arch.input_size() as i64) };
        let shape = (batch, batches, warmup, size);
        let img_s = bench(arch, a, shape).map_err(|e| format!("{arch}: {e}"))?;
        eprintln!("{arch}: {img_s:.2} img/s (batch {}, {} batches, {}×{})", shape.0, shape.1, shape.3, shape.3);
        report[arch.name()] = img_s.into();
    }
    Ok(report)
}

fn main() -> std::process::ExitCode {
    benchkit::main("bench_forward", run)
}
