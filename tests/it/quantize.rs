//! `petal quantize`: the int8 record written into the checkpoint, the refusal when int8 loses
//! too much, and `--precision` following the record: `auto` stays float32 after a refusal, and
//! `--precision int8` evaluates to exactly the accuracy the record measured.
//!
//! Two refusals. One by the bound: on this synthetic set int8 keeps 100 % even when calibrated on
//! one black image (tried), so `--max-loss=-1` demands that int8 *gain* a point, which a model at
//! 100 % cannot. One by a real loss at the default bound, on a model built to lose in int8: one
//! channel of a convolution that every later feature depends on is scaled 10,000× (and the batch
//! norms that read it are rescaled to match, so float32 answers as before), so the per-tensor uint8
//! range of that output is set by the one channel and the others round to nothing. (On real data,
//! quantizing the stem too cost the main job's ensemble 4.65 points: docs/history/benchmarks.md, "int8".)

use crate::common;

use common::{config, make_dataset, ok, train_cmd};

/// `petal evaluate --json` of `ckpt` on `data` with `extra` flags: its top-1 (a fraction).
fn top1(ckpt: &std::path::Path, data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> f64 {
    let mut c = common::petal();
    c.args(["evaluate", "--json", "--checkpoint"]).arg(ckpt).arg("--data").arg(data).arg("--out").arg(out).args(extra);
    let report: serde_json::Value = serde_json::from_str(&ok(c.output().expect("evaluate"), "petal evaluate")).expect("evaluate json");
    report["top1"].as_f64().expect("top1")
}

/// A float model trained (on libtorch) on 6 generated images per class in `dir`: the data, its best
/// checkpoint, an evaluation folder, and its float32 top-1 (checked to be above 0.8).
fn trained(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf, f64) {
    let (data, work) = (dir.join("data"), dir.join("work"));
    make_dataset(&data, 6, 6, 0);
    let cfg = config(&work, "q", &[("epochs", "8"), ("views", "0")]);
    let mut c = train_cmd(&data, Some(&cfg), &work);
    c.args(["--runtime", "torch"]);
    ok(c.output().expect("train"), "petal train");
    let ckpt = work.join("runs/q/best.safetensors");
    let out = work.join("eval");
    let before = top1(&ckpt, &data, &out, &["--precision", "fp32"]);
    assert!(before > 0.8, "the float model learnt the shapes: {before}");
    (data, ckpt, out, before)
}

#[test]
fn quantize_refuses_int8_beyond_the_bound_and_auto_stays_float() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, ckpt, out, before) = trained(tmp.path());

    let mut q = common::petal();
    q.args(["quantize", "--json", "--max-loss=-1", "--calibration-images", "1", "--checkpoint"]).arg(&ckpt).arg("--data").arg(&data);
    let output = q.output().expect("quantize");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let record: serde_json::Value = serde_json::from_str(&ok(output, "petal quantize")).expect("quantize json");
    assert_eq!(record["calibration_images"], 1);
    assert_eq!(record["accepted"], false, "{record}");
    let loss = record["loss_points"].as_f64().expect("loss_points");
    assert!(loss > -1.0 && record["max_loss_points"] == -1.0, "the bound: {record}");
    assert!((record["fp32_top1"].as_f64().unwrap() - 100.0 * before).abs() < 1e-9, "fp32 on onnxruntime = evaluate's top-1: {record}");
    assert!(stderr.contains("int8 refused as the default"), "{stderr}");

    // The record is in the checkpoint, and inspect shows it.
    let mut i = common::petal();
    i.args(["checkpoint", "inspect"]).arg(&ckpt);
    let shown = ok(i.output().expect("inspect"), "petal checkpoint inspect");
    assert!(shown.contains("\"accepted\":false") && shown.contains("\"loss_points\""), "{shown}");

    // auto stays float32; int8 forced evaluates to the record's own measurement.
    assert_eq!(top1(&ckpt, &data, &out, &[]), before, "a refused int8 is not the default");
    let forced = top1(&ckpt, &data, &out, &["--precision", "int8"]);
    assert!((100.0 * forced - record["int8_top1"].as_f64().unwrap()).abs() < 1e-9, "{forced} vs {record}");
    // int8 on libtorch does not exist.
    let mut t = common::petal();
    t.args(["evaluate", "--precision", "int8", "--runtime", "torch", "--checkpoint"]).arg(&ckpt).arg("--data").arg(&data);
    let refused = t.output().expect("evaluate");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("int8 runs on onnxruntime only"));
}

/// With a calibration over the whole train split, int8 keeps the float model's accuracy here and
/// becomes the default: `evaluate` without flags then runs int8.
#[test]
fn an_accepted_int8_becomes_the_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    make_dataset(&data, 6, 6, 0);
    let cfg = config(&work, "q", &[("epochs", "8"), ("views", "0")]);
    ok(train_cmd(&data, Some(&cfg), &work).output().expect("train"), "petal train");
    let ckpt = work.join("runs/q/best.safetensors");
    let out = work.join("eval");
    let mut q = common::petal();
    q.args(["quantize", "--json", "--checkpoint"]).arg(&ckpt).arg("--data").arg(&data);
    let record: serde_json::Value = serde_json::from_str(&ok(q.output().expect("quantize"), "petal quantize")).expect("quantize json");
    assert_eq!(record["calibration_images"], 18, "every train image: {record}");
    assert_eq!(record["accepted"], true, "{record}");
    let int8 = record["int8_top1"].as_f64().unwrap();
    assert!((100.0 * top1(&ckpt, &data, &out, &[]) - int8).abs() < 1e-9, "auto runs int8");
    let fp32 = record["fp32_top1"].as_f64().unwrap();
    assert!((100.0 * top1(&ckpt, &data, &out, &["--precision", "fp32"]) - fp32).abs() < 1e-9, "fp32 is still there");
    // Bias correction is on by default and recorded; so is how often int8 agrees with float32.
    assert!(record["weight_shifts"].is_null(), "--json leaves the shifts out: {record}");
    let agreement = record["top1_agreement"].as_f64().expect("top1_agreement");
    assert!((0.0..=100.0).contains(&agreement), "{record}");

    // serve runs int8 at its defaults and shows the record in /v1/models.
    let spec = format!("q={}", ckpt.display());
    let served = crate::serve::spawn(&["--checkpoint", &spec, "--addr", "127.0.0.1:0"]);
    let models = crate::serve::fixtures::get(served.addr, "/v1/models").json();
    crate::serve::sigterm(&served.child);
    let mut child = served.child;
    assert!(child.wait().expect("petal serve exits").success());
    let m = &models["models"][0];
    assert_eq!((m["runtime"].as_str(), m["precision"].as_str()), (Some("onnxruntime"), Some("int8")), "{m}");
    let shown = &m["int8"];
    assert_eq!(shown["accepted"], true, "{shown}");
    assert_eq!(shown["bias_corrected"], true, "{shown}");
    assert_eq!(shown["int8_top1"].as_f64(), Some(int8), "{shown}");
    assert_eq!(shown["top1_agreement"].as_f64(), Some(agreement), "{shown}");
    assert!(shown.get("ranges").is_none() && shown.get("weight_shifts").is_none(), "the calibration stays out of /v1/models: {shown}");
}

/// `--no-bias-correction` records no shifts, and `inspect` counts the shifts of a corrected one
/// instead of printing them.
#[test]
fn bias_correction_is_recorded_and_can_be_left_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, ckpt, _, _) = trained(tmp.path());
    let meta = |ckpt: &std::path::Path| checkpoint::load(ckpt).expect("checkpoint").meta.inference.expect("inference")["int8"].clone();
    let plain = tmp.path().join("plain.safetensors");
    std::fs::copy(&ckpt, &plain).expect("copy");
    for (file, flags) in [(&ckpt, &[][..]), (&plain, &["--no-bias-correction"][..])] {
        let mut q = common::petal();
        q.args(["quantize", "--calibration-images", "4", "--checkpoint"]).arg(file).arg("--data").arg(&data).args(flags);
        ok(q.output().expect("quantize"), "petal quantize");
    }
    let (corrected, uncorrected) = (meta(&ckpt), meta(&plain));
    assert!(uncorrected.get("weight_shifts").is_none(), "{uncorrected}");
    let shifts = corrected["weight_shifts"].as_object().expect("weight_shifts");
    assert!(!shifts.is_empty() && shifts.values().all(|v| v.as_array().is_some_and(|a| !a.is_empty())), "{shifts:?}");
    assert_eq!(corrected["ranges"], uncorrected["ranges"], "the same calibration images give the same ranges");
    let mut i = common::petal();
    i.args(["checkpoint", "inspect"]).arg(&ckpt);
    let shown = ok(i.output().expect("inspect"), "petal checkpoint inspect");
    assert!(shown.contains(&format!("\"weight_shifts\":\"{} convolutions\"", shifts.len())), "{shown}");
}

/// Applies `f` to slice `c` (output channel `c`) of the f32 tensor `name` of `ckpt`.
fn scale_channel(ckpt: &mut checkpoint::Checkpoint, name: &str, c: usize, f: impl Fn(f32) -> f32) {
    let t = ckpt.tensors.get_mut(name).unwrap_or_else(|| panic!("{name} is not in the checkpoint"));
    let mut v = t.to_f32_vec().expect("f32");
    let per = v.len() / t.shape[0];
    for x in &mut v[c * per..(c + 1) * per] {
        *x = f(*x);
    }
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    *t = checkpoint::TensorData::new(checkpoint::DType::F32, t.shape.clone(), bytes).expect("tensor");
}

#[test]
fn quantize_refuses_a_model_built_to_lose_in_int8() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, ckpt, out, before) = trained(tmp.path());

    // The transition convolution's output channel 0 (read by both layers of the second dense block
    // and by the last norm) 10,000× larger; each batch norm reading it gets mean × s and
    // var' = s²(var + eps) − eps, so (x s − mean s) / sqrt(var' + eps) is what it was.
    let s = 1.0e4_f32;
    let eps = 1e-5_f32;
    let mut k = checkpoint::load(&ckpt).expect("checkpoint");
    scale_channel(&mut k, "features.transition1.conv.weight", 0, |w| w * s);
    for bn in ["features.denseblock2.denselayer1.norm1", "features.denseblock2.denselayer2.norm1", "features.norm5"] {
        scale_channel(&mut k, &format!("{bn}.running_mean"), 0, |m| m * s);
        scale_channel(&mut k, &format!("{bn}.running_var"), 0, |v| s * s * (v + eps) - eps);
    }
    checkpoint::save(&ckpt, &k).expect("save");
    assert_eq!(top1(&ckpt, &data, &out, &["--precision", "fp32"]), before, "float32 answers as before the surgery");

    let mut q = common::petal();
    q.args(["quantize", "--json", "--checkpoint"]).arg(&ckpt).arg("--data").arg(&data);
    let output = q.output().expect("quantize");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let record: serde_json::Value = serde_json::from_str(&ok(output, "petal quantize")).expect("quantize json");
    let loss = record["loss_points"].as_f64().expect("loss_points");
    assert_eq!(record["max_loss_points"], 0.5, "the default bound: {record}");
    assert!(loss > 10.0, "int8 loses far more than the bound on this model: {record}");
    assert_eq!(record["accepted"], false, "{record}");
    assert!(stderr.contains("int8 refused as the default"), "{stderr}");
    assert_eq!(top1(&ckpt, &data, &out, &[]), before, "auto stays float32 after the refusal");
    let forced = top1(&ckpt, &data, &out, &["--precision", "int8"]);
    assert!((100.0 * forced - record["int8_top1"].as_f64().unwrap()).abs() < 1e-9, "{forced} vs {record}");
}
