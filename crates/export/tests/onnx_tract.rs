//! The exported ONNX run by tract (a pure-Rust runtime, no Python) against petal's libtorch
//! forward on real images (`../shared/data` when present, else generated ones): max |diff| ≤ 1e-4
//! on probabilities and the same top-5, for each architecture family (a tiny DenseNet with every
//! head activation, full-size EfficientNet-Lite0 and DenseNet-121 with random weights), at two
//! batch sizes through the one file (dynamic batch).

mod common;

use std::path::Path;

use common::*;
use export::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto, ModelProto};
use prost::Message;
use tract_onnx::prelude::*;

/// Runs `onnx` in tract on `x` (`[N, 3, S, S]`), returns the output rows.
fn tract_rows(onnx: &Path, x: &tch::Tensor) -> Vec<Vec<f32>> {
    let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(x.flatten(0, -1)).expect("input");
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)
        .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load {}: {e:?}", onnx.display()));
    let input = tract_ndarray::Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), data).expect("array").into_tensor();
    let out = plan.run(tvec!(input.into())).expect("tract run");
    let view = out[0].to_array_view::<f32>().expect("f32 output");
    let c = view.shape()[1];
    let flat: Vec<f32> = view.iter().copied().collect();
    flat.chunks(c).map(<[f32]>::to_vec).collect()
}

/// Exports `ckpt` to ONNX and checks it against petal on `paths`, with every batch size in
/// `batches` (taken as prefixes of the images). `log` says the output is log-probabilities.
fn check(dir: &Path, ckpt: &Path, paths: &[std::path::PathBuf], input_size: u32, batches: &[usize], log: bool) {
    let out = dir.join(format!("{}.onnx", ckpt.file_stem().unwrap().to_string_lossy()));
    let exported = export::export(ckpt, export::Format::Onnx, &out).expect("export");
    assert_eq!(exported.info.output, if log { export::OutputKind::LogProbabilities } else { export::OutputKind::Probabilities });
    let x = batch(paths, input_size);
    let want = rows(&petal_probabilities(ckpt, &x));
    for &n in batches {
        let got = tract_rows(&out, &x.narrow(0, 0, n as i64));
        let got: Vec<Vec<f32>> = if log { got.into_iter().map(|r| r.into_iter().map(f32::exp).collect()).collect() } else { got };
        assert_close(&format!("{} batch {n}", out.display()), &got, &want[..n], 1e-4);
    }
}

fn tiny(dir: &Path, name: &str, head: serde_json::Value, paths: &[std::path::PathBuf]) -> std::path::PathBuf {
    random_checkpoint(dir, name, &tiny_densenet(), head, 10, 64, &batch(paths, 64))
}

#[test]
fn tiny_densenet_every_head_matches_petal() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 4);
    let heads = [
        ("relu", serde_json::json!({"hidden": [16], "activation": "relu", "dropout": 0.2})),
        ("relu6", serde_json::json!({"hidden": [16, 12], "activation": "relu6", "dropout": 0.0})),
        ("silu", serde_json::json!({"hidden": [16], "activation": "silu", "dropout": 0.1})),
        ("gelu", serde_json::json!({"hidden": [16], "activation": "gelu", "dropout": 0.1})),
        ("tanh", serde_json::json!({"hidden": [16], "activation": "tanh", "dropout": 0.1})),
        ("linear", serde_json::json!({"hidden": [], "dropout": 0.0})),
    ];
    for (name, head) in heads {
        let ckpt = tiny(dir.path(), &format!("tiny-{name}"), head, &paths);
        check(dir.path(), &ckpt, &paths, 64, &[1, 4], false);
    }
}

#[test]
fn log_softmax_head_exports_log_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 3);
    let ckpt = tiny(dir.path(), "tiny-log", serde_json::json!({"hidden": [16], "dropout": 0.2, "output": "log_softmax"}), &paths);
    check(dir.path(), &ckpt, &paths, 64, &[3], true);
    let model = ModelProto::decode(std::fs::read(dir.path().join("tiny-log.onnx")).unwrap().as_slice()).unwrap();
    let graph = model.graph.unwrap();
    assert_eq!(graph.node.last().unwrap().op_type(), "LogSoftmax");
    assert_eq!(graph.output[0].name(), "log_probabilities");
}

#[test]
fn lite0_full_size_matches_petal() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 3);
    let ckpt = random_checkpoint(
        dir.path(),
        "lite0",
        &model::Arch::EfficientNetLite0,
        serde_json::json!({"hidden": [512], "dropout": 0.2}),
        102,
        224,
        &batch(&paths, 224),
    );
    check(dir.path(), &ckpt, &paths, 224, &[1, 3], false);
}

#[test]
fn densenet121_full_size_matches_petal() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 2);
    let ckpt = random_checkpoint(
        dir.path(),
        "densenet121",
        &model::Arch::DenseNet121,
        serde_json::json!({"hidden": [512], "dropout": 0.2}),
        102,
        224,
        &batch(&paths, 224),
    );
    check(dir.path(), &ckpt, &paths, 224, &[2], false);
}

/// The file itself: opset, IR version, dynamic batch, folded batch norms, metadata and sidecar.
#[test]
fn onnx_file_structure_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(dir.path(), 2);
    let ckpt = tiny(dir.path(), "tiny", serde_json::json!({"hidden": [16], "dropout": 0.2}), &paths);
    let out = dir.path().join("m.onnx");
    let e = export::export(&ckpt, export::Format::Onnx, &out).unwrap();
    let model = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    assert_eq!(model.ir_version(), export::IR_VERSION);
    assert_eq!(model.opset_import[0].version(), 17);
    let g = model.graph.as_ref().unwrap();
    let dims = |v: &export::proto::ValueInfoProto| -> Vec<Dim> {
        let Some(type_proto::Value::TensorType(t)) = &v.r#type.as_ref().unwrap().value else { panic!("not a tensor") };
        t.shape.as_ref().unwrap().dim.iter().map(|d| d.value.clone().unwrap()).collect()
    };
    assert_eq!(dims(&g.input[0]), vec![Dim::DimParam("batch".into()), Dim::DimValue(3), Dim::DimValue(64), Dim::DimValue(64)]);
    assert_eq!(dims(&g.output[0]), vec![Dim::DimParam("batch".into()), Dim::DimValue(10)]);
    let count = |op: &str| g.node.iter().filter(|n| n.op_type() == op).count();
    // Tiny DenseNet (2 blocks of 2 layers): norm0 and every norm2 are folded (1 + 4 of 11 batch
    // norms); norm1 ×4, the transition's norm and norm5 remain.
    assert_eq!(count("BatchNormalization"), 6);
    assert_eq!(count("Conv"), 1 + 4 * 2 + 1);
    assert_eq!(count("Gemm"), 2);
    assert_eq!(count("Softmax"), 1);
    assert_eq!(g.node[0].name(), "/features/conv0/Conv");
    let props: std::collections::BTreeMap<String, String> =
        model.metadata_props.iter().map(|p| (p.key().to_string(), p.value().to_string())).collect();
    assert_eq!(props["output"], "probabilities");
    assert_eq!(props["arch"], "densenet");
    assert_eq!(props["petal_version"], export::PETAL_VERSION);
    let names: Vec<String> = serde_json::from_str(&props["class_names"]).unwrap();
    assert_eq!(names.len(), 10);
    assert_eq!(names[2], "flower 3");
    let pre: checkpoint::Preprocessing = serde_json::from_str(&props["preprocessing"]).unwrap();
    assert_eq!((pre.input_size, pre.resize_size), (64, 73));
    let sidecar: export::ExportInfo = serde_json::from_slice(&std::fs::read(dir.path().join("m.onnx.json")).unwrap()).unwrap();
    assert_eq!(sidecar, e.info);
    assert_eq!(sidecar.classes[9].name.as_deref(), Some("flower 10"));
}
