//! End-to-end, real `petal` processes on generated data: run folders are locked and never silently
//! overwritten, caches are safe with concurrent writers, the documented example pipeline config is
//! honoured, and class names come from `--category-names` or `cat_to_name.json` (root or parent).

use crate::common;

use common::{config, draw, make_dataset, make_images, ok, petal, train_cmd, write_names};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (without a time limit on the assertion) until `path` holds a number, or `child` exits.
fn wait_for_pid(path: &Path, child: &mut Child) -> u32 {
    loop {
        if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse().ok()) {
            return pid;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the first run exited ({status}) before locking its folder");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_run_folder_in_use_is_locked_and_a_finished_run_is_not_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 8, 4, 0);
    // A run far too long to finish while the test looks at it: it is killed below.
    let long = config(tmp.path(), "same", &[("epochs", "1000000")]);
    let mut first = train_cmd(&data, Some(&long), tmp.path()).stderr(Stdio::null()).spawn().expect("spawn the first run");
    let pid = wait_for_pid(&tmp.path().join("runs/same/.lock"), &mut first);
    assert_eq!(pid, first.id());
    let out = train_cmd(&data, Some(&long), tmp.path()).arg("--overwrite").output().expect("second run");
    let err = stderr(&out);
    assert!(!out.status.success(), "a second run of the same name must fail: {err}");
    assert!(err.contains(&format!("pid {pid}")) && err.contains("in use"), "{err}");
    let _ = first.kill();
    let _ = first.wait();

    // The OS released the killed holder's lock. A finished run is refused without --overwrite ...
    let short = config(tmp.path(), "same", &[("epochs", "2")]);
    ok(train_cmd(&data, Some(&short), tmp.path()).arg("--overwrite").output().expect("third run"), "run with --overwrite");
    let run = tmp.path().join("runs/same");
    let before = std::fs::read(run.join("metrics.jsonl")).expect("metrics");
    let out = train_cmd(&data, Some(&short), tmp.path()).output().expect("fourth run");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("already holds a run") && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(run.join("metrics.jsonl")).expect("metrics"), before, "the refused run changed the folder");
    // ... and replaced with it.
    ok(train_cmd(&data, Some(&short), tmp.path()).arg("--overwrite").output().expect("fifth run"), "run with --overwrite");
    assert_eq!(std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics").lines().count(), 2);
}

#[test]
fn concurrent_runs_compute_each_cache_once_and_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 12, 6, 0);
    // Two runs with different names and the same features (2 augmented views read from the image cache).
    let (a, b) = (config(tmp.path(), "a", &[]), config(tmp.path(), "b", &[]));
    let spawn = |cfg: &PathBuf| train_cmd(&data, Some(cfg), tmp.path()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (pa, pb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (pa.wait_with_output().expect("run a"), pb.wait_with_output().expect("run b"));
    let (ea, eb) = (stderr(&oa), stderr(&ob));
    assert!(oa.status.success() && ob.status.success(), "{ea}\n---\n{eb}");
    let both = format!("{ea}\n{eb}");
    // Each cache file was computed by exactly one of the two processes.
    for what in ["train view 1:", "train view 2:", "valid features:", "train: image cache built"] {
        assert_eq!(both.matches(what).count(), 1, "{what:?} computed {} times:\n{both}", both.matches(what).count());
    }
    let cache: Vec<String> = std::fs::read_dir(tmp.path().join("cache"))
        .expect("cache dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(cache.iter().filter(|n| n.starts_with("features-")).count(), 3, "{cache:?}");
    assert!(cache.iter().all(|n| !n.contains(".tmp")), "a temp file was left: {cache:?}");
    let (ma, mb) = (common::metrics(&tmp.path().join("runs/a")), common::metrics(&tmp.path().join("runs/b")));
    assert_eq!(ma.len(), mb.len());
    for (x, y) in ma.iter().zip(&mb) {
        for k in ["train_loss", "train_acc", "valid_loss", "valid_acc"] {
            assert_eq!(x[k], y[k], "epoch {} {k} differs between the two runs", x["epoch"]);
        }
    }
}

/// examples/pipeline.toml (docs/README.md, "The main job"), as documented, with only its data pointed
/// at generated data and its length cut by flags: every other field of the file is honoured.
#[test]
fn the_documented_example_pipeline_config_runs_offline() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 6, 3, 3);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline.toml");
    let out = petal()
        .args(["pipeline", "--config"])
        .arg(&example)
        .arg("--data")
        .arg(&data)
        .arg("--runs-dir")
        .arg(tmp.path().join("runs"))
        .args(["--epochs", "1", "--threads", "1"])
        .output()
        .expect("pipeline");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // The file's run name, architecture and recipe (the best recipe), with the flags' epochs.
    let run = tmp.path().join("runs/lite0");
    let cfg: toml::Table = std::fs::read_to_string(run.join("config.toml")).expect("config.toml").parse().expect("toml");
    assert_eq!(cfg["arch"].as_str(), Some("efficientnet_lite0"));
    assert_eq!(cfg["epochs"].as_integer(), Some(1));
    assert_eq!(cfg["optimizer"].as_str(), Some("adamw"), "the default preset is the best recipe");
    let ckpt = checkpoint::load(&run.join("best.safetensors")).expect("checkpoint");
    assert_eq!(ckpt.meta.arch, "efficientnet_lite0");
    for f in ["README.md", "evaluation-valid.json", "evaluation-test.json", "sample_predictions.png"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    // `--preset seed` gives the seed's recipe under the same file.
    let out = petal()
        .args(["pipeline", "--preset", "seed", "--name", "seed", "--config"])
        .arg(&example)
        .arg("--data")
        .arg(&data)
        .arg("--runs-dir")
        .arg(tmp.path().join("runs"))
        .args(["--epochs", "1", "--threads", "1", "--views", "1"])
        .output()
        .expect("pipeline --preset seed");
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: toml::Table = std::fs::read_to_string(tmp.path().join("runs/seed/config.toml")).expect("config.toml").parse().expect("toml");
    assert_eq!((cfg["optimizer"].as_str(), cfg["lr"].as_float()), (Some("adam"), Some(0.003)));
}

/// The Udacity layout: `flowers/{train,valid,test}` with `cat_to_name.json` one level up.
#[test]
fn category_names_come_from_the_parent_folder_or_a_flag_and_live_in_the_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("flowers");
    make_images(&data, 12, 4, 3);
    write_names(tmp.path());
    let cfg = config(tmp.path(), "names", &[("epochs", "3")]);
    ok(train_cmd(&data, Some(&cfg), tmp.path()).output().expect("train"), "petal train");
    let best = tmp.path().join("runs/names/best.safetensors");
    let ckpt = checkpoint::load(&best).expect("checkpoint");
    let names: Vec<Option<&str>> = ckpt.meta.classes.iter().map(|c| c.name.as_deref()).collect();
    assert_eq!(names, [Some("oxeye daisy"), Some("bearded iris"), Some("garden tulip")]);

    // Predict needs no names file: they come from the checkpoint, even with the file gone.
    std::fs::remove_file(tmp.path().join("cat_to_name.json")).expect("rm");
    let img = tmp.path().join("one.png");
    draw(0, 4242).save(&img).expect("save");
    let predict = |extra: &[&str]| {
        let out = petal().args(["predict", "--json", "--top-k", "3", "--checkpoint"]).arg(&best).arg(&img).args(extra).output().expect("predict");
        let v: serde_json::Value = serde_json::from_str(&ok(out, "petal predict")).expect("json");
        let mut names: Vec<String> = v[0]["top"].as_array().expect("top").iter().map(|c| c["name"].as_str().expect("name").to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(predict(&[]), ["bearded iris", "garden tulip", "oxeye daisy"]);
    // --category-names replaces them, on predict and on evaluate.
    let other = tmp.path().join("other.json");
    std::fs::write(&other, r#"{"daisy": "Bellis", "iris": "Iris", "tulip": "Tulipa"}"#).expect("write");
    let flag = ["--category-names", other.to_str().expect("utf8")];
    assert_eq!(predict(&flag), ["Bellis", "Iris", "Tulipa"]);
    let out = petal()
        .args(["evaluate", "--json", "--split", "test", "--data"])
        .arg(&data)
        .arg("--checkpoint")
        .arg(&best)
        .args(flag)
        .output()
        .expect("evaluate");
    let report: serde_json::Value = serde_json::from_str(&ok(out, "petal evaluate")).expect("json");
    let per_class: Vec<&str> = report["per_class"].as_array().expect("per_class").iter().map(|c| c["name"].as_str().expect("name")).collect();
    assert_eq!(per_class, ["Bellis", "Iris", "Tulipa"]);
    // A names file that is not JSON is named in the error.
    std::fs::write(&other, "not json").expect("write");
    let out = petal().args(["predict", "--checkpoint"]).arg(&best).arg(&img).args(flag).output().expect("predict");
    assert!(!out.status.success() && stderr(&out).contains("other.json"), "{}", stderr(&out));
}

/// `--train-dtype bf16` (bf16 autocast of the head's products) trains: the loss falls, the
/// checkpoint records the dtype and holds f32 weights, and the weights differ from an f32 run of
/// the same seed (the products really ran in bf16).
#[test]
fn a_bf16_head_learns_records_its_dtype_and_keeps_f32_weights() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 8, 4, 0);
    let cfg = config(tmp.path(), "f32", &[("epochs", "8")]);
    ok(train_cmd(&data, Some(&cfg), tmp.path()).output().expect("train f32"), "petal train");
    ok(
        train_cmd(&data, Some(&cfg), tmp.path()).args(["--name", "bf16", "--train-dtype", "bf16"]).output().expect("train bf16"),
        "petal train --train-dtype bf16",
    );
    let losses: Vec<f64> = common::metrics(&tmp.path().join("runs/bf16")).iter().map(|m| m["train_loss"].as_f64().expect("train_loss")).collect();
    assert!(losses.last() < losses.first(), "the bf16 head learns: {losses:?}");
    let load = |name: &str| checkpoint::load(&tmp.path().join(format!("runs/{name}/last.safetensors"))).expect("checkpoint");
    let (f32_run, bf16_run) = (load("f32"), load("bf16"));
    assert_eq!(bf16_run.meta.hyperparameters["train_dtype"], "bf16");
    assert!(f32_run.meta.hyperparameters.get("train_dtype").is_none(), "f32 is the default, not written");
    let head = |c: &checkpoint::Checkpoint| -> Vec<(String, checkpoint::TensorData)> {
        c.tensors.iter().filter(|(k, _)| k.starts_with("classifier.")).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let (a, b) = (head(&f32_run), head(&bf16_run));
    assert!(!b.is_empty() && b.iter().all(|(_, t)| t.dtype == checkpoint::DType::F32), "the head's weights stay f32");
    assert_ne!(a.iter().map(|(_, t)| t.bytes.as_ref()).collect::<Vec<_>>(), b.iter().map(|(_, t)| t.bytes.as_ref()).collect::<Vec<_>>());
}
