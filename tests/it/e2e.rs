//! End-to-end: the real `petal` binary on a learnable synthetic dataset generated into a temp dir
//! (coloured shapes, one colour/shape per class), with a tiny randomly initialised DenseNet.
//! Checks accuracy, predictions on held-out images, resume after `kill -9`, early stopping,
//! and clear errors on bad input.

use crate::common;

use common::{config, draw, make_dataset, metrics, ok, petal, train_cmd, CLASSES};
use std::path::Path;
use std::process::Command;

#[test]
fn train_evaluate_predict_on_synthetic_flowers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 24, 8, 4);
    let cfg = config(tmp.path(), "synthetic", &[]);
    ok(train_cmd(&data, Some(&cfg), tmp.path()).output().expect("run petal train"), "petal train");
    let run = tmp.path().join("runs/synthetic");
    let m = metrics(&run);
    assert_eq!(m.len(), 12);
    let first_loss = m[0]["train_loss"].as_f64().expect("loss");
    let last_loss = m[11]["train_loss"].as_f64().expect("loss");
    assert!(last_loss < first_loss * 0.5, "loss did not fall: {first_loss} -> {last_loss}");
    let best_valid = m.iter().filter_map(|e| e["valid_acc"].as_f64()).fold(0.0, f64::max);
    assert!(best_valid > 0.9, "validation accuracy {best_valid}");
    for f in ["best.safetensors", "last.safetensors", "metrics.csv", "curves.png", "config.toml"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    assert!(std::fs::read_to_string(run.join("metrics.csv")).expect("csv").starts_with("epoch,train_loss,train_acc,valid_loss,valid_acc"));

    // Evaluate on the held-out test split.
    let out = petal()
        .args(["evaluate", "--json", "--split", "test", "--data"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(run.join("best.safetensors"))
        .output()
        .expect("run evaluate");
    let report: serde_json::Value = serde_json::from_str(&ok(out, "petal evaluate")).expect("json");
    assert!(report["top1"].as_f64().expect("top1") > 0.9, "{report}");
    assert_eq!(report["images"], 12);
    assert!(run.join("confusion-test.png").exists() && run.join("confusion-test.csv").exists());

    // Predict names the right class for held-out images, with display names.
    for (c, (folder, _)) in CLASSES.iter().enumerate() {
        let img = tmp.path().join(format!("held-out-{folder}.png"));
        draw(c, 5000 + c as u32).save(&img).expect("save");
        let out = petal()
            .args(["predict", "--json", "--top-k", "3", "--checkpoint"])
            .arg(run.join("best.safetensors"))
            .arg(&img)
            .output()
            .expect("run predict");
        let preds: serde_json::Value = serde_json::from_str(&ok(out, "petal predict")).expect("json");
        let top = &preds[0]["top"];
        assert_eq!(top.as_array().map(Vec::len), Some(3));
        assert_eq!(top[0]["folder"], *folder, "{preds}");
        let p0 = top[0]["prob"].as_f64().expect("prob");
        // Well above chance (1/3), and ranked first.
        assert!(p0 > 0.4 && p0 >= top[1]["prob"].as_f64().expect("prob"), "{preds}");
    }
    // A folder runs as a batch and writes a CSV; --plot draws the sanity-check figure.
    let csv = tmp.path().join("preds.csv");
    let plot = tmp.path().join("pred.png");
    let out = petal()
        .args(["predict", "--checkpoint"])
        .arg(run.join("best.safetensors"))
        .arg(data.join("test"))
        .arg("--csv")
        .arg(&csv)
        .arg("--plot")
        .arg(&plot)
        .output()
        .expect("predict folder");
    let text = ok(out, "petal predict folder");
    assert!(text.contains("garden tulip") || text.contains("oxeye daisy"), "{text}");
    assert_eq!(std::fs::read_to_string(&csv).expect("csv").lines().count(), 1 + 12);
    // The figure: the size report draws, and a picture rather than a blank canvas (its pixels
    // spread over many grey levels: the photo, the bars, the text).
    let img = image::open(&plot).expect("a PNG").to_luma8();
    assert_eq!(img.dimensions(), report::PREDICTION_SIZE);
    let mut levels = [false; 256];
    img.pixels().for_each(|p| levels[p.0[0] as usize] = true);
    assert!(levels.iter().filter(|&&l| l).count() > 32, "the figure is nearly uniform");
}

#[test]
fn resume_after_kill_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 12, 6, 0);
    let runs = tmp.path().join("runs");
    let run_train = |cfg: &Path, resume: bool| {
        let mut c = train_cmd(&data, Some(cfg), tmp.path());
        if resume {
            c.arg("--resume");
        }
        c
    };
    // Uninterrupted reference.
    let full = config(tmp.path(), "full", &[]);
    ok(run_train(&full, false).output().expect("full run"), "full run");
    // Interrupted: the run halts right after its 3rd epoch is saved (the test hook), is killed
    // with SIGKILL there, then resumes.
    let cut = config(tmp.path(), "cut", &[]);
    let mut child = run_train(&cut, false)
        .env(train::TEST_HALT_EPOCHS_ENV, "3")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut log = String::new();
    let mut halted = false;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.expect("read stderr");
        log.push_str(&line);
        log.push('\n');
        if line.contains("halted for a test after epoch 3") {
            halted = true;
            break;
        }
    }
    child.kill().expect("kill -9"); // SIGKILL on Unix
    child.wait().expect("wait");
    assert!(halted, "the run ended without halting after epoch 3: {log}");
    assert_eq!(metrics(&runs.join("cut")).len(), 3, "exactly three epochs were saved before the kill");
    ok(run_train(&cut, true).output().expect("resume"), "resumed run");
    let (a, b) = (metrics(&runs.join("full")), metrics(&runs.join("cut")));
    assert_eq!(a.len(), 12);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for k in ["train_loss", "train_acc", "valid_loss", "valid_acc", "lr"] {
            assert_eq!(x[k], y[k], "epoch {} {k} differs after resume", x["epoch"]);
        }
    }
    // The last checkpoints are the same bytes: every tensor (weights, optimiser state, random
    // generator state) and every metadata field but the creation time and the run's name.
    let (full, cut) =
        (checkpoint::load(&runs.join("full/last.safetensors")).expect("full"), checkpoint::load(&runs.join("cut/last.safetensors")).expect("cut"));
    assert_eq!(full.tensors.len(), cut.tensors.len());
    for (name, t) in &full.tensors {
        let other = cut.tensors.get(name).unwrap_or_else(|| panic!("{name} missing after resume"));
        assert!(t.bytes[..] == other.bytes[..] && t.shape == other.shape && t.dtype == other.dtype, "{name} differs after resume");
    }
    let strip = |m: &checkpoint::Metadata| {
        let mut v = serde_json::to_value(m).expect("metadata");
        v["created_utc"] = serde_json::Value::Null;
        v["hyperparameters"]["name"] = serde_json::Value::Null;
        v["metrics"]["history"].as_array_mut().into_iter().flatten().for_each(|e| e["epoch_s"] = 0.into());
        v["metrics"]["history"].as_array_mut().into_iter().flatten().for_each(|e| e["img_s"] = 0.into());
        v
    };
    assert_eq!(strip(&full.meta), strip(&cut.meta));
}

#[test]
fn early_stopping_stops_and_keeps_the_best() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 12, 6, 0);
    let runs = tmp.path().join("runs");
    // lr 0 never improves after epoch 1: patience 2 stops after epoch 3.
    let cfg = config(tmp.path(), "stop", &[("patience", "2"), ("weight_decay", "0.0"), ("lr", "1e-12")]);
    let out = train_cmd(&data, Some(&cfg), tmp.path()).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("early stopping"), "{err}");
    let m = metrics(&runs.join("stop"));
    assert_eq!(m.len(), 3);
    // The first epoch is the best (nothing learns after it), and best.safetensors is that epoch:
    // its recorded best epoch is 1, and its history stops there.
    let best = checkpoint::load(&runs.join("stop/best.safetensors")).expect("best");
    assert_eq!(best.meta.metrics["best_epoch"], 1);
    assert_eq!(best.meta.metrics["history"].as_array().map(Vec::len), Some(1));
    let first = m[0]["valid_acc"].as_f64().expect("valid_acc");
    assert!(m[1..].iter().all(|e| e["valid_acc"].as_f64().expect("valid_acc") <= first), "{m:?}");
}

/// Runs `petal` expecting a clean failure: non-zero exit, no panic, and every `needles` in stderr.
fn fails(cmd: &mut Command, needles: &[&str]) -> String {
    let out = cmd.output().expect("run petal");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure: {cmd:?}\n{err}");
    assert_eq!(out.status.code().map(|c| c == 1 || c == 2), Some(true), "exit status {:?} (a crash?): {err}", out.status);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "panic instead of an error: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    err
}

#[test]
fn bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A missing dataset.
    fails(petal().args(["train", "--data"]).arg(tmp.path().join("nope")), &["nope"]);
    // A checkpoint that is not one.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not a checkpoint").expect("write");
    let img = tmp.path().join("x.png");
    draw(0, 1).save(&img).expect("save");
    fails(petal().args(["predict", "--checkpoint"]).arg(&junk).arg(&img), &["junk.safetensors"]);
}

#[test]
fn cli_error_paths_exit_non_zero_with_a_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 2, 1, 0);
    let train = || train_cmd(&data, None, tmp.path());
    // Bad enum values name the flag and the value.
    fails(train().args(["--arch", "resnet9000"]), &["--arch", "resnet9000"]);
    fails(train().args(["--mode", "sideways"]), &["--mode", "sideways"]);
    // A known name used wrongly says why: a member's own side outside an ensemble, or out of range.
    fails(train().args(["--arch", "efficientnet_lite0@224"]), &["--arch", "ensemble member"]);
    fails(train().args(["--arch", "resnet18+resnet18@9"]), &["resnet18@9", "16 to 1024"]);
    // Every built-in architecture is accepted on the command line (`-` for `_` too), as
    // `cargo xtask fetch-weights` passes it to `petal import-weights`.
    for name in model::arch_registry::arch_names().into_iter().chain(["efficientnet-lite2", "VGG16-BN"]) {
        let out = train().args(["--arch", name, "--print-config"]).output().expect("run petal");
        let text = ok(out, name);
        let canonical = name.to_ascii_lowercase().replace('-', "_");
        assert!(text.contains(&format!("arch = \"{canonical}\"")), "{name}: {text}");
    }
    // Malformed TOML: the file is named, and so is the line.
    let bad_toml = tmp.path().join("broken.toml");
    std::fs::write(&bad_toml, "name = \"x\"\nepochs = [oops\n").expect("write");
    fails(train().arg("--config").arg(&bad_toml), &["broken.toml", "line 2"]);
    // A well-formed TOML with a value of the wrong type.
    let typed = tmp.path().join("typed.toml");
    std::fs::write(&typed, "epochs = \"many\"\n").expect("write");
    fails(train().arg("--config").arg(&typed), &["typed.toml", "epochs"]);
    // A config file that does not exist.
    fails(train().arg("--config").arg(tmp.path().join("absent.toml")), &["absent.toml"]);
    // An unknown preset names the preset and the known ones.
    fails(train().args(["--preset", "turbo"]), &["turbo", "seed"]);

    // A checkpoint to predict with (1 epoch; accuracy does not matter here).
    let cfg = config(tmp.path(), "tiny", &[("epochs", "1")]);
    ok(train().arg("--config").arg(&cfg).output().expect("train"), "petal train");
    let ckpt = tmp.path().join("runs/tiny/best.safetensors");
    let predict = || {
        let mut c = petal();
        c.args(["predict", "--checkpoint"]).arg(&ckpt);
        c
    };
    // Missing input, and a folder with no images.
    fails(predict().arg(tmp.path().join("ghost.png")), &["ghost.png", "does not exist"]);
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    std::fs::write(empty.join("notes.txt"), "no pictures here").expect("write");
    fails(predict().arg(&empty), &["no images found", "empty"]);
    // An unusable checkpoint: a valid petal file holding weights but no class list.
    let weights_only = tmp.path().join("weights-only.petal");
    let mut c = checkpoint::load(&ckpt).expect("load");
    c.meta.classes.clear();
    checkpoint::save(&weights_only, &c).expect("save");
    let img = tmp.path().join("x.png");
    draw(1, 3).save(&img).expect("save");
    fails(petal().args(["predict", "--checkpoint"]).arg(&weights_only).arg(&img), &["weights-only.petal", "class list"]);
    fails(petal().args(["evaluate", "--data"]).arg(&data).arg("--checkpoint").arg(&weights_only), &["weights-only.petal"]);
}

#[test]
fn pipeline_runs_every_stage_then_skips_unchanged_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 16, 6, 4);
    let train_cfg = std::fs::read_to_string(config(tmp.path(), "pipe", &[])).expect("cfg");
    // The same training table under [train], plus pipeline keys.
    let mut text =
        format!("data = {:?}\nruns_dir = {:?}\ncache_dir = {:?}\nsamples = 3\ntop_k = 3\n", data, tmp.path().join("runs"), tmp.path().join("cache"));
    text.push_str("[train]\n");
    text.push_str(&train_cfg.replace("[arch.densenet]", "[train.arch.densenet]").replace("[head]", "[train.head]"));
    let cfg = tmp.path().join("pipeline.toml");
    std::fs::write(&cfg, text).expect("write");
    let out = petal().args(["pipeline", "--config"]).arg(&cfg).output().expect("pipeline");
    let first = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{first}");
    let run = tmp.path().join("runs/pipe");
    for f in
        ["README.md", "curves.png", "confusion-valid.png", "confusion-test.png", "sample_predictions.png", "evaluation-test.json", "best.safetensors"]
    {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("evaluation-test.json")).expect("eval")).expect("json");
    assert!(eval["top1"].as_f64().expect("top1") > 0.9, "{eval}");
    let readme = std::fs::read_to_string(run.join("README.md")).expect("readme");
    assert!(readme.contains("top-1") && readme.contains("curves.png") && readme.contains("| train | 48 |"), "{readme}");
    // Each top-1 comes with its standard error, in points (Agresti–Coull over the split's images).
    let (n, top1) = (eval["images"].as_f64().expect("images"), eval["top1"].as_f64().expect("top1"));
    let (m, p) = (n + 4.0, (top1 * n + 2.0) / (n + 4.0));
    let se = format!("top-1 {:.2}% (± {:.2})", 100.0 * top1, 100.0 * (p * (1.0 - p) / m).sqrt());
    assert!(readme.contains(&se), "{se} not in {readme}");
    // Second run: nothing changed, every stage says it is skipped.
    let out = petal().args(["pipeline", "--config"]).arg(&cfg).output().expect("pipeline again");
    let second = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{second}");
    // The tta stage measured test-time augmentation on valid and recorded its advice in the checkpoint.
    assert!(first.contains("tta flip") && first.contains("predict uses tta"), "{first}");
    let meta = checkpoint::load(&run.join("best.safetensors")).expect("best").meta;
    assert!(meta.inference.is_some_and(|i| i["split"] == "valid"), "no inference advice recorded");
    for stage in ["[preprocess]", "[train]", "[tta]", "[evaluate-valid]", "[evaluate-test]", "[predict]"] {
        assert!(second.contains(&format!("{stage} inputs unchanged")), "{stage} not skipped:\n{second}");
    }
}

#[test]
fn finetuning_trains_only_the_unfrozen_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 12, 6, 0);
    let runs = tmp.path().join("runs");
    let train = |cfg: &Path| ok(train_cmd(&data, Some(cfg), tmp.path()).output().expect("run"), "petal train");
    // Same seed, same initialisation: one run frozen, one fine-tuning the last block (block2).
    let frozen = config(tmp.path(), "frozen", &[("epochs", "4")]);
    let ft = config(tmp.path(), "ft", &[("unfreeze_blocks", "1"), ("backbone_lr_scale", "0.5"), ("mode", "\"finetune\""), ("epochs", "4")]);
    train(&frozen);
    train(&ft);
    let a = checkpoint::load(&runs.join("frozen/last.safetensors")).expect("frozen ckpt");
    let b = checkpoint::load(&runs.join("ft/last.safetensors")).expect("ft ckpt");
    let stem = "features.conv0.weight";
    let last_block = "features.denseblock2.denselayer2.conv2.weight";
    assert_eq!(a.tensors[stem], b.tensors[stem], "the frozen stem must not change");
    assert_eq!(a.tensors[last_block].shape, b.tensors[last_block].shape);
    assert_ne!(a.tensors[last_block], b.tensors[last_block], "the unfrozen block must train");
    let m = metrics(&runs.join("ft"));
    assert_eq!(m.len(), 4);
    let (first, last) = (m[0]["train_loss"].as_f64().expect("epoch 1 loss"), m[3]["train_loss"].as_f64().expect("epoch 4 loss"));
    assert!(last < first, "{m:?}");
    assert_eq!(b.meta.hyperparameters["mode"], "finetune");
    // A checkpoint stores the recipe, not how the run ran (device, threads, batch sizes, runtime).
    for key in ["device", "threads", "runtime", "eval_batch_size", "chunk_images", "channels_last"] {
        assert!(b.meta.hyperparameters.get(key).is_none(), "the checkpoint stores the run option {key}: {}", b.meta.hyperparameters);
    }
}

#[test]
fn skip_bad_trains_past_a_corrupt_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 8, 4, 0);
    // Cut a training PNG in half: its header still reads, its pixels do not.
    let victim = data.join("train/iris/003.png");
    let bytes = std::fs::read(&victim).expect("read");
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).expect("truncate");
    let cfg = config(tmp.path(), "bad", &[("epochs", "2")]);
    let run = |skip: bool| {
        let mut c = train_cmd(&data, Some(&cfg), &tmp.path().join(if skip { "skip" } else { "no-skip" }));
        if skip {
            c.arg("--skip-bad");
        }
        c.output().expect("run")
    };
    let out = run(false);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a corrupt image must stop training without --skip-bad");
    assert!(err.contains("003.png") && !err.contains("panicked"), "{err}");
    let out = run(true);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("003.png"), "the skipped image is named: {err}");
}

/// An ensemble of two tiny DenseNets (`arch = { ensemble = [...] }`): one head on their
/// concatenated features trains, evaluates and predicts like a single backbone; a partial run is
/// refused with the reason; its checkpoint's backbones load as `--weights` of a new run.
#[test]
fn an_ensemble_of_two_backbones_trains_predicts_and_seeds_another_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 24, 8, 4);
    // The test config with its `[arch.densenet]` table replaced by `members(that table's body)`.
    let with_members = |name: &str, set: &[(&str, &str)], members: &dyn Fn(&str) -> String| {
        let cfg = config(tmp.path(), name, set);
        let text = std::fs::read_to_string(&cfg).expect("config");
        let (top, rest) = text.split_once("[arch.densenet]\n").expect("arch table");
        let (densenet, head) = rest.split_once("[head]").expect("head table");
        std::fs::write(&cfg, format!("{top}{}[head]{head}", members(densenet))).expect("config");
        cfg
    };
    let member = |d: &str| format!("[[arch.ensemble]]\n[arch.ensemble.densenet]\n{d}");
    let ensemble = |name: &str, set: &[(&str, &str)]| {
        with_members(name, set, &|d| format!("{}{}", member(d), member(&d.replace("growth_rate = 4", "growth_rate = 6"))))
    };
    let cfg = ensemble("ens", &[]);
    ok(train_cmd(&data, Some(&cfg), tmp.path()).output().expect("run petal train"), "petal train (ensemble)");
    let run = tmp.path().join("runs/ens");
    let best_valid = metrics(&run).iter().filter_map(|e| e["valid_acc"].as_f64()).fold(0.0, f64::max);
    assert!(best_valid > 0.9, "validation accuracy {best_valid}");
    let best = run.join("best.safetensors");
    let imported = checkpoint::import(&best).expect("import");
    let meta = imported.meta.expect("petal metadata");
    assert_eq!(meta.arch, "ensemble");
    assert_eq!(meta.arch_config["ensemble"].as_array().map(Vec::len), Some(2));
    // Growth 4 and 6, two blocks of two layers from 8 features: 8+2·4 = 16 → 8 after the transition,
    // +2·4 = 16 features; 8+2·6 = 20 → 10, +2·6 = 22. The head's first layer sees 16 + 22.
    assert_eq!(imported.tensors["classifier.0.weight"].shape, vec![32, 38]);
    assert!(imported.tensors.contains_key("members.1.features.denseblock2.denselayer2.conv2.weight"));
    let out = petal()
        .args(["evaluate", "--json", "--split", "test", "--tta", "flip", "--data"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(&best)
        .output()
        .expect("evaluate");
    let report: serde_json::Value = serde_json::from_str(&ok(out, "petal evaluate (ensemble)")).expect("json");
    assert!(report["top1"].as_f64().expect("top1") > 0.9, "{report}");
    let img = tmp.path().join("held-out.png");
    draw(1, 7000).save(&img).expect("save");
    let out = petal().args(["predict", "--json", "--checkpoint"]).arg(&best).arg(&img).output().expect("predict");
    let preds: serde_json::Value = serde_json::from_str(&ok(out, "petal predict (ensemble)")).expect("json");
    assert_eq!(preds[0]["top"][0]["folder"], CLASSES[1].0, "{preds}");

    // Partial mode cannot split an ensemble of DenseNets (their blocks are not shared units): a clear error, no panic.
    let partial = ensemble("ens-partial", &[("mode", "\"partial\"")]);
    fails(
        &mut train_cmd(&data, Some(&partial), tmp.path()),
        &["partial mode splits an ensemble between blocks only when its members are efficientnet_lite0/1/2"],
    );

    // Multi-scale features: the second member sees the 32 px images resampled to 24 px. It trains,
    // records the member's side, and its checkpoint evaluates like any other.
    let cfg = with_members("ens-multiscale", &[], &|d| {
        format!("{}[[arch.ensemble]]\n[arch.ensemble.rescaled]\nsize = 24\n[arch.ensemble.rescaled.arch.densenet]\n{d}", member(d))
    });
    ok(train_cmd(&data, Some(&cfg), tmp.path()).output().expect("run petal train"), "petal train (multi-scale ensemble)");
    let ms = tmp.path().join("runs/ens-multiscale/best.safetensors");
    let meta = checkpoint::import(&ms).expect("import").meta.expect("petal metadata");
    assert_eq!(meta.arch_config["ensemble"][1]["rescaled"]["size"], 24, "{}", meta.arch_config);
    let out = petal().args(["evaluate", "--json", "--split", "test", "--data"]).arg(&data).arg("--checkpoint").arg(&ms).output().expect("evaluate");
    let report: serde_json::Value = serde_json::from_str(&ok(out, "petal evaluate (multi-scale ensemble)")).expect("json");
    assert!(report["top1"].as_f64().expect("top1") > 0.9, "{report}");
    // Partial mode refuses it: its members' maps are not the same size.
    let refused = cfg.with_file_name("ens-multiscale-partial.toml");
    std::fs::write(&refused, std::fs::read_to_string(&cfg).expect("config").replace("mode = \"frozen\"", "mode = \"partial\"")).expect("config");
    fails(&mut train_cmd(&data, Some(&refused), tmp.path()), &["partial mode splits an ensemble between blocks only when"]);

    // The trained ensemble's backbones as the pretrained weights of a new run (head keys set aside).
    let again = ensemble("ens-again", &[("epochs", "2")]);
    let out = train_cmd(&data, Some(&again), tmp.path()).arg("--weights").arg(&best).output().expect("train again");
    ok(out, "petal train --weights <ensemble checkpoint>");
    let seeded = checkpoint::import(&tmp.path().join("runs/ens-again/best.safetensors")).expect("import");
    let key = "members.0.features.denseblock1.denselayer1.conv1.weight";
    assert_eq!(seeded.tensors[key].bytes, imported.tensors[key].bytes, "the backbone came from --weights");
}
