//! The fair protocol, end to end on generated data: `--holdout` cuts the validation split into a
//! selection part (which chooses the epoch and the calibration) and a held-out part (which only
//! reports); `--final-fit` retrains on exactly train plus the selection part for the chosen epoch
//! count and records it; `evaluate` warns when asked to score images a checkpoint trained on.

use crate::common;

use common::{config, make_dataset, ok, petal, train_cmd};
use std::collections::BTreeSet;
use std::path::Path;

fn evaluate(data: &Path, ckpt: &Path, split: &str, out: &Path) -> std::process::Output {
    petal()
        .args(["evaluate", "--data"])
        .arg(data)
        .arg("--checkpoint")
        .arg(ckpt)
        .args(["--split", split, "--json", "--out"])
        .arg(out)
        .output()
        .expect("petal evaluate")
}

/// The images of an evaluation, from its per-class counts and the paths a checkpoint recorded.
fn trained_on(ckpt: &Path) -> checkpoint::TrainedOn {
    checkpoint::TrainedOn::of(&checkpoint::load(ckpt).expect("checkpoint").meta).expect("a trained_on record")
}

#[test]
fn a_final_fit_trains_on_train_plus_the_selection_part_for_the_chosen_epochs_and_evaluate_warns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // 3 classes: 8 training images and 6 validation images each; half of each class held out.
    make_dataset(&data, 8, 6, 0);
    let cfg = config(tmp.path(), "fair", &[("epochs", "6"), ("holdout", "0.5"), ("holdout_seed", "3"), ("final_fit", "true")]);
    let out = train_cmd(&data, Some(&cfg), tmp.path()).arg("--measure-tta").output().expect("petal train");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let run = tmp.path().join("runs/fair");

    // The chosen run validated on the selection part only, and kept its best epoch.
    let chosen = common::metrics(&run);
    assert_eq!(chosen.len(), 6);
    let best = checkpoint::load(&run.join("best.safetensors")).expect("best");
    let best_epoch = best.meta.metrics["best_epoch"].as_u64().expect("best_epoch") as usize;
    assert!((1..=6).contains(&best_epoch));
    let record = trained_on(&run.join("best.safetensors"));
    assert_eq!(record.splits, ["train"]);
    assert_eq!(record.selected_on.as_deref(), Some("valid-select"));
    assert!(record.images.is_empty() && !record.final_fit);
    let cut = record.holdout.clone().expect("the cut is recorded");
    assert_eq!((cut.split.as_str(), cut.fraction, cut.seed), ("valid", 0.5, 3));

    // The final fit: exactly the chosen number of epochs, no validation, on 24 + 9 images.
    let fit = common::metrics(&run.join("final"));
    assert_eq!(fit.len(), best_epoch, "the final fit runs the chosen epoch count");
    assert!(fit.iter().all(|m| m["valid_acc"].is_null()), "the final fit validates on nothing");
    assert!(err.contains(&format!("final fit: {best_epoch} epochs on 33 images")), "{err}");
    let fin = trained_on(&run.join("final.safetensors"));
    assert!(fin.final_fit);
    assert_eq!(fin.splits, ["train"]);
    assert_eq!(fin.images.len(), 9, "the selection part: 3 of each class's 6");
    // The final checkpoint is its last epoch.
    let last = checkpoint::load(&run.join("final/last.safetensors")).expect("final last");
    assert_eq!(checkpoint::load(&run.join("final.safetensors")).expect("final").tensors.len(), last.tensors.len());
    assert_eq!(last.meta.metrics["history"].as_array().map(Vec::len), Some(best_epoch));

    // The held-out part is the rest of valid, and the final fit never saw it.
    let eval_dir = tmp.path().join("eval");
    let held = ok(evaluate(&data, &run.join("final.safetensors"), "valid-holdout", &eval_dir), "evaluate valid-holdout");
    let held: serde_json::Value = serde_json::from_str(&held).expect("json");
    assert_eq!(held["images"], 9);
    assert_eq!(held["trained_on_images"], 0);
    assert!(held["warnings"].as_array().is_some_and(Vec::is_empty), "{held}");
    let all_valid: BTreeSet<String> = std::fs::read_dir(data.join("valid"))
        .unwrap()
        .flat_map(|c| std::fs::read_dir(c.unwrap().path()).unwrap())
        .map(|f| {
            let p = f.unwrap().path();
            format!("valid/{}/{}", p.parent().unwrap().file_name().unwrap().to_string_lossy(), p.file_name().unwrap().to_string_lossy())
        })
        .collect();
    let selected: BTreeSet<String> = fin.images.iter().cloned().collect();
    assert!(selected.is_subset(&all_valid) && selected.len() == 9);

    // evaluate warns on what a checkpoint trained on, and says how much of the split it was.
    let out = evaluate(&data, &run.join("final.safetensors"), "valid-select", &eval_dir);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: 9 of the 9 images of valid-select were used to train"), "{err}");
    let out = evaluate(&data, &run.join("best.safetensors"), "train", &eval_dir);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("warning: 24 of the 24 images of train were used to train"), "{err}");
    // The chosen checkpoint did not train on the selection part: no warning there.
    let out = evaluate(&data, &run.join("best.safetensors"), "valid-select", &eval_dir);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success() && !err.contains("warning:"), "{err}");

    // Calibration: fitted on the selection part, recorded in both checkpoints, applied by evaluate.
    let cal = |p: &Path| checkpoint::load(p).expect("ckpt").meta.inference.expect("inference")["calibration"].clone();
    let (a, b) = (cal(&run.join("best.safetensors")), cal(&run.join("final.safetensors")));
    assert_eq!(a, b, "the final fit takes the chosen run's temperature");
    assert_eq!(a["split"], "valid-select");
    let t = a["temperature"].as_f64().expect("temperature");
    assert!(t > 0.0 && t.is_finite());
    assert_eq!(held["temperature"].as_f64(), Some(t));
    assert!(eval_dir.join("reliability-valid-holdout.png").exists());

    // --measure-tta: measured on the selection part, and the advice recorded in both checkpoints.
    let advice = |p: &Path| {
        let inf = checkpoint::load(p).expect("ckpt").meta.inference.expect("inference");
        (inf["tta"].clone(), inf["split"].clone(), inf["top1"].clone())
    };
    let (a, b) = (advice(&run.join("best.safetensors")), advice(&run.join("final.safetensors")));
    assert!(a.0.is_string() && a.1 == "valid-select" && a.2.as_object().is_some_and(|m| m.len() == 3), "{a:?}");
    assert_eq!(a, b, "the final fit predicts with the chosen run's advice");
}

#[test]
fn a_final_fit_without_a_holdout_is_refused_by_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    make_dataset(&data, 2, 2, 0);
    let out = train_cmd(&data, None, tmp.path()).args(["--arch", "densenet121", "--final-fit"]).output().expect("petal train");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(err.contains("final_fit") && err.contains("holdout"), "{err}");
    let out = train_cmd(&data, None, tmp.path()).args(["--arch", "densenet121", "--holdout", "1.5"]).output().expect("petal train");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && err.contains("holdout must be in [0, 1)"), "{err}");
}
