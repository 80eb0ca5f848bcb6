//! The suites of `cargo xtask bench`, in the order they run: for each, the example and reference
//! that measure it, the metrics it declares (and whether higher or lower is better), and the
//! paragraph of BENCHMARKS.md that says what it measures and against what.

use std::path::Path;

/// How one metric compares: higher is better (throughput) or lower is better (seconds).
#[derive(Clone, Copy)]
pub(super) enum Better {
    /// Higher is better: throughput, accuracy, answered requests.
    Higher,
    /// Lower is better: times, latencies, memory, errors, losses.
    Lower,
}

/// One benchmark suite: what runs on each side, what it reports and what that means.
pub(super) struct Suite {
    /// The name `--only` takes, and the key of the suite's entry in the record.
    pub(super) name: &'static str,
    /// What the suite measures and what its reference column is (one paragraph of BENCHMARKS.md).
    pub(super) about: &'static str,
    /// The package whose example measures the petal side.
    pub(super) package: &'static str,
    /// That example (`crates/<package>/examples/<example>.rs`).
    pub(super) example: &'static str,
    /// The reference script, relative to the repository root; empty for a suite without one.
    pub(super) script: &'static str,
    /// The metrics the suite declares, in table order, each with its direction.
    pub(super) metrics: &'static [(&'static str, Better)],
    /// Arguments for both sides, given the data folder.
    pub(super) args: fn(&Path) -> Vec<String>,
    /// The example drives the reference itself (given `--vs-pytorch --python PY`) and prints
    /// `{"rust": {...}, "pytorch": {...}}`; `script` is the reference it starts.
    pub(super) self_compared: bool,
    /// The example has a `--smoke` mode (a self-compared suite may not).
    pub(super) smoke: bool,
    /// The example starts `petal` itself: it is given (`--petal`) the dev-profile binary that
    /// `cargo xtask predict` and `cargo xtask serve` run, so the figures are the documented commands'.
    pub(super) runs_petal: bool,
    /// The ImageNet weights the petal side trains from (`--weights`), provisioned as `cargo xtask
    /// fetch-weights` does before the suite runs (not in a smoke run, which uses random weights).
    pub(super) weights: Option<&'static str>,
}

/// The suites, in the order they run.
pub(super) const SUITE_NAMES: [&str; 9] = ["preprocess", "checkpoint", "convert", "forward", "train", "predict", "serve", "export", "soak"];

/// Every suite, in the order they run, with what it declares.
pub(super) fn suites() -> Vec<Suite> {
    use Better::*;
    vec![
        Suite {
            name: "preprocess",
            about: "Throughput (images/s) of preprocessing over the 306 full-resolution JPEGs of the `train` split of \
                    `flowers102-fullres-sample`: the eval transform (Resize 256, CenterCrop 224, ToTensor, \
                    Normalize) and the train augmentation (the seed's RandomRotation 30, RandomResizedCrop 224, flip), first from \
                    the JPEG files, then (`cached_*`) from petal's decoded-image cache. Reference: torchvision and PIL with the \
                    same transforms, ImageFolder through a DataLoader with 2 workers (`bench/preprocess_torchvision.py`); \
                    torchvision has no decoded-image cache, so its `cached_*` figures are absent. `stage_*`: petal's \
                    single-thread ms per image of each stage alone (the whole decode, the decode of only the window the eval \
                    crop reads, `Resize(256)` of the whole image, `CenterCrop(224)`, ToTensor + Normalize into a batch \
                    buffer), and `stage_eval_view_ms`, the loader's whole eval view of a file (windowed decode, the crop's \
                    region of the resize, ToTensor + Normalize).",
            package: "preprocess",
            example: "bench_preprocess",
            script: "bench/preprocess_torchvision.py",
            metrics: &[
                ("eval_img_s", Higher),
                ("train_img_s", Higher),
                ("cached_eval_img_s", Higher),
                ("cached_train_img_s", Higher),
                ("stage_decode_ms", Lower),
                ("stage_decode_window_ms", Lower),
                ("stage_resize_256_ms", Lower),
                ("stage_center_crop_224_ms", Lower),
                ("stage_normalize_into_batch_ms", Lower),
                ("stage_eval_view_ms", Lower),
            ],
            args: |d| vec!["--data".into(), d.join("flowers102-fullres-sample").display().to_string(), "--stages".into()],
            self_compared: false,
            smoke: true,
            runs_petal: false,
            weights: None,
        },
        Suite {
            name: "checkpoint",
            about: "Median seconds to save a densenet121-shaped checkpoint (about 32 MB of F32 tensors) atomically (temp file, \
                    fsync, rename) and to load it back (read, parse, checksum verification). Reference: `torch.save` and \
                    `torch.load` of the same tensor set (`bench/checkpoint_io.py`).",
            package: "checkpoint",
            example: "bench_io",
            script: "bench/checkpoint_io.py",
            metrics: &[("save_s", Lower), ("load_s", Lower)],
            args: |_| vec![],
            self_compared: false,
            smoke: true,
            runs_petal: false,
            weights: None,
        },
        Suite {
            name: "convert",
            about: "Streaming import of a large old checkpoint: a torchvision VGG-16 state dict with random weights (about 553 \
                    MB), in the zip and in the legacy serialization, converted into a petal checkpoint as `petal checkpoint \
                    convert` does; median seconds (`*_s`) and peak RSS as a multiple of the file size (`*_peak_rss_x`), each \
                    conversion in a fresh process. Reference: `torch.load` of the same files, each in a fresh process \
                    (`bench/convert_pytorch.py`, which the Rust example drives).",
            package: "model",
            example: "bench_convert",
            script: "bench/convert_pytorch.py",
            metrics: &[("zip_s", Lower), ("legacy_s", Lower), ("zip_peak_rss_x", Lower), ("legacy_peak_rss_x", Lower)],
            args: |_| vec![],
            self_compared: true,
            smoke: true,
            runs_petal: false,
            weights: None,
        },
        Suite {
            name: "forward",
            about: "Forward throughput (images/s) of densenet121 and EfficientNet-Lite0 at batch 32 with random weights: frozen \
                    backbone, channels_last, batch norms folded, `no_grad`, eval mode, each network at its own input size. With \
                    `--forward-all`, every architecture issue 11 added (VGG, ResNet, AlexNet, EfficientNet-Lite1/2) at batch 8 \
                    instead. Reference: PyTorch eager, channels_last, under `torch.inference_mode` (`bench/forward_pytorch.py`).",
            package: "model",
            example: "bench_forward",
            script: "bench/forward_pytorch.py",
            metrics: &[("densenet121", Higher), ("efficientnet_lite0", Higher)],
            args: |_| vec![],
            self_compared: false,
            smoke: true,
            runs_petal: false,
            weights: None,
        },
        Suite {
            name: "train",
            about: "A whole training run on `flowers102-mini` with the EfficientNet-Lite0 ImageNet backbone frozen, from cold \
                    caches: the best validation accuracy (a selection score: the epoch is chosen on the same images) and the wall \
                    time, feature extraction included, of petal's default recipe (features computed once, a linear head, AdamW, \
                    cosine schedule, 80 head epochs). Reference: the seed project's recipe in PyTorch (`bench/train_pytorch.py`: \
                    backbone and augmentation every epoch, Adam, 10 epochs), so this table compares two recipes, not two \
                    implementations of one.",
            package: "train",
            example: "bench_train",
            script: "bench/train_pytorch.py",
            metrics: &[("valid_acc", Higher), ("wall_s", Lower)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
            runs_petal: false,
            weights: Some("efficientnet_lite0"),
        },
        Suite {
            name: "predict",
            about: "Prediction latency of an EfficientNet-Lite0 checkpoint with a 102-class head: `cold_s` is the wall time from \
                    spawning `petal predict` (the dev-profile build that `cargo xtask predict` runs) on one image to its exit (process start, model load, decode, forward, top-5), median \
                    of several runs; `warm_img_s` is the throughput of a predictor loaded once, over validation images of \
                    `flowers102-mini` in batches. Reference: the same network converted to a `.pth`, the seed's `predict.py` for \
                    cold and a torchvision DataLoader with 2 workers under `torch.inference_mode` for warm \
                    (`bench/predict_pytorch.py`).",
            package: "infer",
            example: "bench_predict",
            script: "bench/predict_pytorch.py",
            metrics: &[("cold_s", Lower), ("warm_img_s", Higher)],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
            runs_petal: true,
            weights: None,
        },
        Suite {
            name: "serve",
            about: "`petal serve` at its defaults (the dev-profile build that `cargo xtask serve` runs) under a closed loop of 1, 8 and 32 concurrent clients (one JPEG per request, \
                    keep-alive, loopback), medians over rounds that alternate the two servers: requests/s, p50 and p99 latency, \
                    errors, and peak RSS. Then an open-loop overload at twice the best throughput, against petal only \
                    (`overload_*`: offered rate, answered, shed with 503, lost, p99 of the answered). Reference: the same network \
                    and weights served the way people usually write it, FastAPI + uvicorn + PyTorch with PIL and torchvision \
                    transforms (`bench/serve_pytorch.py`), driven by the same load generator in the same rounds; it has no \
                    overload figures.",
            package: "serve",
            example: "bench_serve",
            script: "bench/serve_pytorch.py",
            metrics: &[
                ("c1_rps", Higher),
                ("c1_p50_ms", Lower),
                ("c1_p99_ms", Lower),
                ("c8_rps", Higher),
                ("c8_p50_ms", Lower),
                ("c8_p99_ms", Lower),
                ("c32_rps", Higher),
                ("c32_p50_ms", Lower),
                ("c32_p99_ms", Lower),
                ("c1_errors", Lower),
                ("c8_errors", Lower),
                ("c32_errors", Lower),
                ("rss_mb", Lower),
                ("overload_offered_rps", Higher),
                ("overload_ok", Higher),
                ("overload_503", Higher),
                ("overload_lost", Lower),
                ("overload_p99_ms", Lower),
            ],
            args: |d| vec!["--data".into(), d.display().to_string()],
            self_compared: true,
            smoke: true,
            runs_petal: true,
            weights: None,
        },
        // The "pytorch" column is onnxruntime here: petal (libtorch) vs onnxruntime on the ONNX
        // files petal exported in the same run; the `tract_*` rows are tract on the same files; the
        // `int8_*` rows are petal's int8 path vs onnxruntime on the same quantized file; the
        // `eager_*` rows are petal's libtorch path vs PyTorch eager on the same architecture.
        Suite {
            name: "export",
            about: "Throughput (images/s) of exported networks at batch 1 and 32, random weights, for EfficientNet-Lite0, -Lite2, \
                    DenseNet-121 and the Lite0+1+2 ensemble (`lite012`). The petal column: the plain rows are petal's libtorch \
                    path, `ort_*` petal with its backbone on onnxruntime as petal runs it (idle workers sleep, leaving the \
                    cores to image decoding), `ort_spin_*` the same with spinning workers (onnxruntime's own default), `int8_*` \
                    petal's int8 path, `eager_*` the libtorch path again, `tract_*` tract (one thread) on the exported ONNX \
                    files. The reference column is not PyTorch here: it is onnxruntime (default CPU provider) running the ONNX \
                    files petal exported in the same run (`bench/export_onnxruntime.py`), with its default session options for \
                    the plain and `ort_spin_*` rows and with spinning off, as petal, for `ort_*` and `int8_*` (the quantized \
                    files), except for `eager_*`, where it is PyTorch eager on the same architectures; tract has no reference.",
            package: "export",
            example: "bench_export",
            script: "bench/export_onnxruntime.py",
            metrics: &[
                ("lite0_b1_img_s", Higher),
                ("lite0_b32_img_s", Higher),
                ("lite2_b1_img_s", Higher),
                ("lite2_b32_img_s", Higher),
                ("densenet121_b1_img_s", Higher),
                ("densenet121_b32_img_s", Higher),
                ("lite012_b1_img_s", Higher),
                ("lite012_b32_img_s", Higher),
                ("ort_lite0_b1_img_s", Higher),
                ("ort_lite0_b32_img_s", Higher),
                ("ort_lite2_b1_img_s", Higher),
                ("ort_lite2_b32_img_s", Higher),
                ("ort_densenet121_b1_img_s", Higher),
                ("ort_densenet121_b32_img_s", Higher),
                ("ort_lite012_b1_img_s", Higher),
                ("ort_lite012_b32_img_s", Higher),
                ("ort_spin_lite0_b1_img_s", Higher),
                ("ort_spin_lite0_b32_img_s", Higher),
                ("ort_spin_lite2_b1_img_s", Higher),
                ("ort_spin_lite2_b32_img_s", Higher),
                ("ort_spin_densenet121_b1_img_s", Higher),
                ("ort_spin_densenet121_b32_img_s", Higher),
                ("ort_spin_lite012_b1_img_s", Higher),
                ("ort_spin_lite012_b32_img_s", Higher),
                ("int8_lite0_b1_img_s", Higher),
                ("int8_lite0_b32_img_s", Higher),
                ("int8_lite2_b1_img_s", Higher),
                ("int8_lite2_b32_img_s", Higher),
                ("int8_densenet121_b1_img_s", Higher),
                ("int8_densenet121_b32_img_s", Higher),
                ("int8_lite012_b1_img_s", Higher),
                ("int8_lite012_b32_img_s", Higher),
                ("eager_lite0_b1_img_s", Higher),
                ("eager_lite0_b32_img_s", Higher),
                ("eager_lite2_b1_img_s", Higher),
                ("eager_lite2_b32_img_s", Higher),
                ("eager_densenet121_b1_img_s", Higher),
                ("eager_densenet121_b32_img_s", Higher),
                ("eager_lite012_b1_img_s", Higher),
                ("eager_lite012_b32_img_s", Higher),
                ("tract_lite0_b1_img_s", Higher),
                ("tract_lite0_b32_img_s", Higher),
                ("tract_densenet121_b1_img_s", Higher),
                ("tract_densenet121_b32_img_s", Higher),
            ],
            args: |d| vec!["--data".into(), d.join("flowers102-mini").display().to_string()],
            self_compared: false,
            smoke: true,
            runs_petal: false,
            weights: None,
        },
        // No reference: `petal serve` alone under mixed traffic for 10 minutes (20 s in smoke).
        Suite {
            name: "soak",
            about: "`petal serve` alone for 10 minutes under mixed traffic, with access tokens on and a 1 MB body limit: paced \
                    clients sending valid JPEG, PNG, WebP and multipart requests, an abusive client (junk, oversized and malformed \
                    bodies, bad tokens), a rate-limited client, and raw sockets (an upload cut off half-way, a slow sender, an \
                    idle connection). Figures: valid requests answered and lost, their p50/p99 latency, 5xx answers other than the \
                    designed 503, and the growth of the server's resident memory (middle to end), open descriptors and threads. \
                    Then, with `ab` on the PATH, ApacheBench at 1, 8 and 32 clients against the soaked server with the valid \
                    token (the per-client limits answer most of the 8- and 32-client requests 429): `ab_unfinished` counts \
                    the runs that did not finish (a hung or reset connection). Goals: nothing lost, no such 5xx, RSS growth \
                    at most 5 %, no descriptor or thread growth, every ab run finished. There is no reference: the \
                    service is measured against its goals.",
            package: "serve",
            example: "bench_soak",
            script: "",
            metrics: &[
                ("valid_ok", Higher),
                ("valid_lost", Lower),
                ("valid_p50_ms", Lower),
                ("valid_p99_ms", Lower),
                ("server_5xx", Lower),
                ("rss_growth_pct", Lower),
                ("fd_growth", Lower),
                ("thread_growth", Lower),
                ("ab_unfinished", Lower),
            ],
            args: |d| vec!["--data".into(), d.display().to_string()],
            self_compared: true,
            smoke: true,
            runs_petal: true,
            weights: None,
        },
    ]
}

/// The forward suite's metrics with `--forward-all`: every architecture issue 11 added.
pub(super) const FORWARD_ALL: &[(&str, Better)] = &[
    ("vgg11", Better::Higher),
    ("vgg11_bn", Better::Higher),
    ("vgg13", Better::Higher),
    ("vgg13_bn", Better::Higher),
    ("vgg16", Better::Higher),
    ("vgg16_bn", Better::Higher),
    ("vgg19", Better::Higher),
    ("vgg19_bn", Better::Higher),
    ("resnet18", Better::Higher),
    ("resnet34", Better::Higher),
    ("resnet50", Better::Higher),
    ("resnet101", Better::Higher),
    ("resnet152", Better::Higher),
    ("alexnet", Better::Higher),
    ("efficientnet_lite1", Better::Higher),
    ("efficientnet_lite2", Better::Higher),
];

/// `s` with the metrics a run reports: with `--forward-all`, the forward suite's are [`FORWARD_ALL`].
pub(super) fn with_run_metrics(s: Suite, forward_all: bool) -> Suite {
    if s.name == "forward" && forward_all {
        return Suite { metrics: FORWARD_ALL, ..s };
    }
    s
}
