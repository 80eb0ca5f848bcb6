//! Assembling and serialising ONNX `ModelProto`s.

use model::Arch;
use prost::Message;

use crate::graph::{Graph, Params};
use crate::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension, type_proto, GraphProto, ModelProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::{nets, Error};

/// The ONNX opset every graph uses (the default of `torch.onnx.export` in PyTorch 2.x).
pub const OPSET: i64 = 17;
/// The IR version matching [`OPSET`] (ONNX 1.12), as `torch.onnx.export` writes it.
pub const IR_VERSION: i64 = 8;
/// Name of the network input (`[batch, 3, H, W]`, normalised RGB, float32).
pub const INPUT_NAME: &str = "input";
/// Name of a backbone model's output (`[batch, F]`, the pooled features).
pub const FEATURES_NAME: &str = "features";
/// Name of a cut backbone's output (`[batch, C, H, W]`, the activation map at the cut).
pub const ACTIVATIONS_NAME: &str = "activations";

/// A float tensor's value info; `dims` as given.
pub fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: Some(TensorShapeProto { dim: dims.to_vec() }) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

/// The dynamic batch dimension (`dim_param` `batch`).
pub fn batch_dim() -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam("batch".into())), ..Default::default() }
}

/// A fixed dimension.
pub fn fixed_dim(v: i64) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(v)), ..Default::default() }
}

/// A model of the graph `g` reading [`INPUT_NAME`] `[batch, 3, side, side]` and writing `output`
/// `[batch, width]`; `name` and `doc` describe it.
pub fn model_of(g: &mut Graph, side: i64, (output, width): (&str, i64), name: String, doc: String) -> ModelProto {
    model_with_output(g, side, value_info(output, &[batch_dim(), fixed_dim(width)]), name, doc)
}

/// A dimension named `name` (`dim_param`), its size left to the runtime.
fn named_dim(name: &str) -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam(name.into())), ..Default::default() }
}

/// [`model_of`] with any output.
fn model_with_output(g: &mut Graph, side: i64, output: ValueInfoProto, name: String, doc: String) -> ModelProto {
    let graph = GraphProto {
        node: std::mem::take(&mut g.nodes),
        name: Some(name),
        initializer: std::mem::take(&mut g.initializers),
        input: vec![value_info(INPUT_NAME, &[batch_dim(), fixed_dim(3), fixed_dim(side), fixed_dim(side)])],
        output: vec![output],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("petal".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(doc),
        graph: Some(graph),
        ..Default::default()
    }
}

/// The backbone of `arch` alone, from the input to the pooled features [`FEATURES_NAME`]
/// `[batch, feature_dim]` (what `model::Classifier::infer_features` computes).
pub fn backbone_model(params: &Params, arch: &Arch, side: i64, feature_dim: i64) -> Result<ModelProto, Error> {
    let mut g = Graph::default();
    let feats = nets::backbone(&mut g, params, arch, side, INPUT_NAME)?;
    g.rename_output(&feats, FEATURES_NAME)?;
    let doc = format!("{} backbone (pooled features) built by petal", arch.name());
    Ok(model_of(&mut g, side, (FEATURES_NAME, feature_dim), format!("petal_{}_backbone", arch.name()), doc))
}

/// The frozen part of `arch` split after `units` backbone units (partial mode's activations),
/// from the input to [`ACTIVATIONS_NAME`] `[batch, C, H, W]` (what
/// `model::Classifier::activations` computes).
pub fn prefix_model(params: &Params, arch: &Arch, side: i64, units: usize) -> Result<ModelProto, Error> {
    let mut g = Graph::default();
    let acts = nets::backbone_prefix(&mut g, params, arch, units, INPUT_NAME)?;
    g.rename_output(&acts, ACTIVATIONS_NAME)?;
    let doc = format!("{} backbone cut after {units} units (activation map) built by petal", arch.name());
    let output = value_info(ACTIVATIONS_NAME, &[batch_dim(), named_dim("channels"), named_dim("height"), named_dim("width")]);
    Ok(model_with_output(&mut g, side, output, format!("petal_{}_prefix{units}", arch.name()), doc))
}

/// The serialised protobuf.
pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
