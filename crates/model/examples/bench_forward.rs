//! Forward throughput (images/s) of densenet121 and efficientnet_lite0 at batch 32 with random
//! weights: frozen backbone, channels_last, batch norm folded, `no_grad`, eval mode.
//!
//! `cargo run --release -p model --example bench_forward -- [--json] [--batches N] [--warmup N]
//! [--batch B] [--threads T] [--arch NAME]...`
//! With `--json` prints one line: `{"impl":"tch","batch":32,"batches":3,"threads":2,
//! "densenet121":<img/s>,"efficientnet_lite0":<img/s>}` (same keys as `bench/forward_pytorch.py`).

use std::time::Instant;

use model::{freeze_backbone, Arch, Classifier, HeadConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

struct Args {
    json: bool,
    batches: usize,
    warmup: usize,
    batch: i64,
    threads: Option<i32>,
    archs: Vec<Arch>,
    plain: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { json: false, batches: 3, warmup: 1, batch: 32, threads: None, archs: vec![], plain: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--json" => a.json = true,
            "--plain" => a.plain = true,
            "--batches" => a.batches = val("--batches")?.parse().map_err(|e| format!("--batches: {e}"))?,
            "--warmup" => a.warmup = val("--warmup")?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--batch" => a.batch = val("--batch")?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--threads" => a.threads = Some(val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?),
            "--arch" => a.archs.push(val("--arch")?.parse().map_err(|e| format!("{e}"))?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.archs.is_empty() {
        a.archs = vec![Arch::DenseNet121, Arch::EfficientNetLite0];
    }
    if a.batches == 0 || a.batch <= 0 {
        return Err("--batches and --batch must be positive".into());
    }
    Ok(a)
}

fn bench(arch: &Arch, a: &Args) -> Result<f64, model::Error> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let mut m = Classifier::new(&vs.root(), arch, &HeadConfig::default(), 102)?;
    let x = Tensor::randn([a.batch, 3, 224, 224], (Kind::Float, Device::Cpu));
    if !a.plain {
        freeze_backbone(&vs, arch, 0);
        m.set_channels_last(true)?;
        m.fold_batchnorm();
    }
    let run = || tch::no_grad(|| m.forward_t(&x, false));
    for _ in 0..a.warmup {
        let _ = run();
    }
    let t = Instant::now();
    for _ in 0..a.batches {
        let _ = run();
    }
    Ok((a.batches as i64 * a.batch) as f64 / t.elapsed().as_secs_f64())
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_forward: {e}");
            std::process::exit(2);
        }
    };
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let mut fields = vec![
        ("impl".to_string(), "\"tch\"".to_string()),
        ("batch".into(), a.batch.to_string()),
        ("batches".into(), a.batches.to_string()),
        ("threads".into(), tch::get_num_threads().to_string()),
    ];
    for arch in &a.archs {
        match bench(arch, &a) {
            Ok(r) => {
                if !a.json {
                    println!("{arch}: {r:.2} img/s (batch {}, {} batches)", a.batch, a.batches);
                }
                fields.push((arch.name().to_string(), format!("{r:.3}")));
            }
            Err(e) => {
                eprintln!("bench_forward: {arch}: {e}");
                std::process::exit(1);
            }
        }
    }
    if a.json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    }
}
