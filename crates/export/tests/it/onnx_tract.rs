//! The exported ONNX run by tract (a pure-Rust runtime, no Python) against petal's libtorch
//! forward (`infer::Predictor`) on photos (`../shared/data` when present, else the committed
//! fixture images): max |diff| ≤ 1e-4 on probabilities and the same top-5, for every built-in
//! architecture (random weights, 64 px inputs so the whole set takes seconds), every head
//! activation, a log-softmax head, full-size (224 px) Lite0 and DenseNet-121, several batch sizes
//! through the one file (dynamic batch), and the adaptive pooling at every input/output ratio.

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use export::proto::{tensor_shape_proto::dimension::Value as Dim, type_proto, ModelProto};
use model::Arch;
use prost::Message;
use tract_onnx::prelude::*;

/// The real-photo variant of these checks (skipped, with the fixture images used, when
/// `../shared/data` is absent).
const REAL: &str = "export/onnx_tract/real_images";

/// Runs the ONNX `model` in tract on `x` (`[N, ...]`), returns the output rows.
fn tract_rows(model: &[u8], x: &tch::Tensor) -> Vec<Vec<f32>> {
    let shape: Vec<usize> = x.size().iter().map(|&d| d as usize).collect();
    let data = Vec::<f32>::try_from(x.flatten(0, -1)).expect("input");
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .and_then(|m| m.with_input_fact(0, f32::fact(&shape).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .unwrap_or_else(|e| panic!("tract cannot load the model: {e:?}"));
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, data).expect("array").into_tensor();
    let out = plan.run(tvec!(input.into())).expect("tract run");
    let view = out[0].to_array_view::<f32>().expect("f32 output");
    let c = view.shape()[1..].iter().product::<usize>().max(1);
    let flat: Vec<f32> = view.iter().copied().collect();
    flat.chunks(c).map(<[f32]>::to_vec).collect()
}

/// Exports `ckpt` to ONNX and checks it against petal on `paths`, with every batch size in
/// `batches` (prefixes of the images). `log` says the output is log-probabilities.
fn check(dir: &Path, ckpt: &Path, paths: &[PathBuf], input_size: u32, batches: &[usize], log: bool) {
    let out = dir.join(format!("{}.onnx", ckpt.file_stem().unwrap().to_string_lossy()));
    let exported = export::export(ckpt, export::Format::Onnx, &out).expect("export");
    assert_eq!(exported.info.output, if log { export::OutputKind::LogProbabilities } else { export::OutputKind::Probabilities });
    let x = batch(paths, input_size);
    let want = rows(&petal_probabilities(ckpt, &x));
    let bytes = std::fs::read(&out).unwrap();
    for &n in batches {
        let got = tract_rows(&bytes, &x.narrow(0, 0, n as i64));
        let got: Vec<Vec<f32>> = if log { got.into_iter().map(|r| r.into_iter().map(f32::exp).collect()).collect() } else { got };
        assert_close(&format!("{} batch {n}", out.display()), &got, &want[..n], 1e-4);
    }
}

/// Every architecture of `archs` at 64 px, 10 classes, one hidden layer, 2 images.
fn archs_match_petal(archs: &[Arch]) {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 2);
    let x = batch(&paths, 64);
    for arch in archs {
        let ckpt = random_checkpoint(dir.path(), arch.name(), arch, serde_json::json!({"hidden": [16], "dropout": 0.2}), 10, 64, &x);
        check(dir.path(), &ckpt, &paths, 64, &[2], false);
        std::fs::remove_file(&ckpt).unwrap();
    }
}

#[test]
fn densenets_match_petal() {
    archs_match_petal(&[Arch::DenseNet121, Arch::DenseNet161, Arch::DenseNet169, Arch::DenseNet201]);
}

#[test]
fn efficientnet_lites_match_petal() {
    archs_match_petal(&[Arch::EfficientNetLite0, Arch::EfficientNetLite1, Arch::EfficientNetLite2]);
}

#[test]
fn vggs_and_alexnet_match_petal() {
    archs_match_petal(&[
        Arch::Vgg11,
        Arch::Vgg11Bn,
        Arch::Vgg13,
        Arch::Vgg13Bn,
        Arch::Vgg16,
        Arch::Vgg16Bn,
        Arch::Vgg19,
        Arch::Vgg19Bn,
        Arch::AlexNet,
    ]);
}

/// An ensemble's graph runs each member on the input and concatenates their features in order.
#[test]
fn an_ensemble_matches_petal() {
    archs_match_petal(&[Arch::ensemble(vec![Arch::ResNet18, Arch::EfficientNetLite0, Arch::AlexNet]).unwrap()]);
}

/// Members at their own sides (multi-scale features): the graph resamples the input for each, down
/// and up, before its backbone; AlexNet's pooling follows its side.
#[test]
fn a_multi_scale_ensemble_matches_petal() {
    archs_match_petal(&["resnet18+resnet18@48+alexnet@80".parse().unwrap()]);
}

#[test]
fn resnets_match_petal() {
    archs_match_petal(&[Arch::ResNet18, Arch::ResNet34, Arch::ResNet50, Arch::ResNet101, Arch::ResNet152]);
}

/// The lists above are every built-in architecture: a new one must be added to a test.
#[test]
fn the_tests_cover_every_builtin_architecture() {
    let tested = [
        "densenet121 densenet161 densenet169 densenet201",
        "efficientnet_lite0 efficientnet_lite1 efficientnet_lite2",
        "vgg11 vgg11_bn vgg13 vgg13_bn vgg16 vgg16_bn vgg19 vgg19_bn alexnet",
        "resnet18 resnet34 resnet50 resnet101 resnet152",
    ]
    .join(" ");
    for arch in Arch::builtin() {
        assert!(tested.split(' ').any(|t| t == arch.name()), "{} has no export test", arch.name());
    }
}

fn tiny(dir: &Path, name: &str, head: serde_json::Value, paths: &[PathBuf]) -> PathBuf {
    random_checkpoint(dir, name, &tiny_densenet(), head, 10, 64, &batch(paths, 64))
}

#[test]
fn every_head_matches_petal_at_several_batch_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 4);
    let heads = [
        ("relu", serde_json::json!({"hidden": [16], "activation": "relu", "dropout": 0.2})),
        ("relu6", serde_json::json!({"hidden": [16, 12], "activation": "relu6", "dropout": 0.0})),
        ("silu", serde_json::json!({"hidden": [16], "activation": "silu", "dropout": 0.1})),
        ("gelu", serde_json::json!({"hidden": [16], "activation": "gelu", "dropout": 0.1})),
        ("tanh", serde_json::json!({"hidden": [16], "activation": "tanh", "dropout": 0.1})),
        ("linear", serde_json::json!({"hidden": [], "dropout": 0.0})),
    ];
    for (i, (name, head)) in heads.into_iter().enumerate() {
        let ckpt = tiny(dir.path(), &format!("tiny-{name}"), head, &paths);
        let batches: &[usize] = if i == 0 { &[1, 3, 4] } else { &[4] };
        check(dir.path(), &ckpt, &paths, 64, batches, false);
    }
}

#[test]
fn log_softmax_head_exports_log_probabilities() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 3);
    let ckpt = tiny(dir.path(), "tiny-log", serde_json::json!({"hidden": [16], "dropout": 0.2, "output": "log_softmax"}), &paths);
    check(dir.path(), &ckpt, &paths, 64, &[3], true);
    let model = ModelProto::decode(std::fs::read(dir.path().join("tiny-log.onnx")).unwrap().as_slice()).unwrap();
    let graph = model.graph.unwrap();
    assert_eq!(graph.node.last().unwrap().op_type(), "LogSoftmax");
    assert_eq!(graph.output[0].name(), "log_probabilities");
    let props: std::collections::BTreeMap<String, String> =
        model.metadata_props.iter().map(|p| (p.key().to_string(), p.value().to_string())).collect();
    assert_eq!(props["output"], "log_probabilities");
}

/// The sizes the networks are used at: Lite0's static padding and DenseNet-121's pooling at 224.
#[test]
fn full_size_lite0_and_densenet121_match_petal() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 2);
    let x = batch(&paths, 224);
    for arch in [Arch::EfficientNetLite0, Arch::DenseNet121] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [512], "dropout": 0.2}), 102, 224, &x);
        check(dir.path(), &ckpt, &paths, 224, &[2], false);
    }
}

/// `Graph::adaptive_avg_pool_flatten` in tract equals libtorch's `adaptive_avg_pool2d` + flatten
/// for every way it is written: global, `AveragePool` (kernel 1 and 2), and the pooling matrix for
/// inputs smaller than or not divisible by the output.
#[test]
fn adaptive_pooling_matches_libtorch() {
    use export::proto::{GraphProto, OperatorSetIdProto};
    for (side, out, ops) in
        [(7, 1, "GlobalAveragePool"), (7, 7, "AveragePool"), (14, 7, "AveragePool"), (2, 7, "MatMul"), (5, 3, "MatMul"), (1, 6, "MatMul")]
    {
        let mut g = export::graph::Graph::default();
        let y = g.adaptive_avg_pool_flatten("x", "avgpool", 4, side, out);
        // Drawn under the generator lock: an unlocked draw would land inside another test's seeded
        // sequence (int8's random checkpoint) and change the weights it is built on.
        let x = {
            let _generator = model::random_generator_lock();
            tch::Tensor::randn([2, 4, side, side], (tch::Kind::Float, tch::Device::Cpu))
        };
        let want = rows(&x.adaptive_avg_pool2d([out, out]).flatten(1, -1));
        let (nodes, initializers) = g.into_parts();
        assert!(nodes.iter().any(|n| n.op_type() == ops), "{side}->{out}: no {ops}");
        let io = |name: &str| {
            let tensor = type_proto::Tensor { elem_type: Some(export::proto::tensor_proto::DataType::Float as i32), shape: None };
            let ty = export::proto::TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() };
            export::proto::ValueInfoProto { name: Some(name.into()), r#type: Some(ty), ..Default::default() }
        };
        let model = ModelProto {
            ir_version: Some(export::IR_VERSION),
            opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(export::OPSET) }],
            graph: Some(GraphProto { node: nodes, initializer: initializers, input: vec![io("x")], output: vec![io(&y)], ..Default::default() }),
            ..Default::default()
        };
        let got = tract_rows(&model.encode_to_vec(), &x);
        assert_close(&format!("adaptive pool {side} -> {out}"), &got, &want, 1e-5);
    }
}

/// The file itself: opset, IR version, dynamic batch, folded batch norms, metadata and sidecar.
#[test]
fn onnx_file_structure_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let paths = images(REAL, 2);
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

/// ResNet and VGG-BN have every batch norm folded: no `BatchNormalization` node is left.
#[test]
fn batch_norms_after_convolutions_are_folded() {
    let dir = tempfile::tempdir().unwrap();
    let x = tch::Tensor::zeros([1, 3, 64, 64], (tch::Kind::Float, tch::Device::Cpu));
    for (arch, convs) in [(Arch::ResNet18, 20), (Arch::Vgg11Bn, 8)] {
        let ckpt = random_checkpoint(dir.path(), arch.name(), &arch, serde_json::json!({"hidden": [], "dropout": 0.0}), 3, 64, &x);
        let out = dir.path().join("m.onnx");
        export::export(&ckpt, export::Format::Onnx, &out).unwrap();
        let g = ModelProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap().graph.unwrap();
        assert_eq!(g.node.iter().filter(|n| n.op_type() == "BatchNormalization").count(), 0, "{}", arch.name());
        assert_eq!(g.node.iter().filter(|n| n.op_type() == "Conv").count(), convs, "{}", arch.name());
    }
}
