//! Assembling and serialising the ONNX `ModelProto`.

use prost::Message;

use crate::graph::Graph;
use crate::proto::{
    tensor_proto::DataType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension, type_proto, GraphProto, ModelProto, OperatorSetIdProto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::{nets, Error, ExportInfo, Loaded};

/// The ONNX opset every export uses (the default of `torch.onnx.export` in PyTorch 2.x).
pub const OPSET: i64 = 17;
/// The IR version matching [`OPSET`] (ONNX 1.12), as `torch.onnx.export` writes it.
pub const IR_VERSION: i64 = 8;

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: Some(TensorShapeProto { dim: dims.to_vec() }) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

fn batch_dim() -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam("batch".into())), ..Default::default() }
}

fn fixed_dim(v: i64) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(v)), ..Default::default() }
}

/// The ONNX model of `loaded`: input [`crate::INPUT_NAME`] `[batch, 3, S, S]`, one output named
/// after the output kind, `metadata_props` from `info`.
pub fn onnx_model(loaded: &Loaded, info: &ExportInfo) -> Result<ModelProto, Error> {
    let params = loaded.params();
    let mut g = Graph::default();
    let feats = nets::backbone(&mut g, &params, &loaded.arch, loaded.preprocessing.input_size as i64, crate::INPUT_NAME)?;
    let logits = nets::head(&mut g, &params, loaded.head(), &feats)?;
    let op = match loaded.output {
        crate::OutputKind::Probabilities => "Softmax",
        crate::OutputKind::LogProbabilities => "LogSoftmax",
    };
    let out = g.softmax(&logits, "", op, 1);
    g.rename_output(&out, &info.output_name)?;
    let [_, c, h, w] = loaded.input_shape(1);
    let graph = GraphProto {
        node: std::mem::take(&mut g.nodes),
        name: Some(format!("petal_{}", info.arch)),
        initializer: std::mem::take(&mut g.initializers),
        input: vec![value_info(crate::INPUT_NAME, &[batch_dim(), fixed_dim(c), fixed_dim(h), fixed_dim(w)])],
        output: vec![value_info(&info.output_name, &[batch_dim(), fixed_dim(info.classes.len() as i64)])],
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(OPSET) }],
        producer_name: Some("petal".into()),
        producer_version: Some(crate::PETAL_VERSION.into()),
        doc_string: Some(format!("{} classifier exported by petal from {}; output: {}", info.arch, info.source_checkpoint, info.output_name)),
        graph: Some(graph),
        metadata_props: metadata_props(info)?,
        ..Default::default()
    })
}

/// One `metadata_props` entry per field of `info` (strings as is, the rest as JSON text), plus
/// `class_names`: the display names in output order as a JSON array.
fn metadata_props(info: &ExportInfo) -> Result<Vec<StringStringEntryProto>, Error> {
    let serde_json::Value::Object(fields) = serde_json::to_value(info).map_err(|e| Error::Graph(e.to_string()))? else {
        return Err(Error::Graph("export info is not a JSON object".into()));
    };
    let names: Vec<String> = info.classes.iter().map(|c| c.name.clone().unwrap_or_else(|| c.folder.clone())).collect();
    let mut props: Vec<(String, String)> = fields
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            };
            (k, text)
        })
        .collect();
    props.push(("class_names".into(), serde_json::Value::from(names).to_string()));
    Ok(props.into_iter().map(|(key, value)| StringStringEntryProto { key: Some(key), value: Some(value) }).collect())
}

/// The serialised protobuf.
pub(crate) fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}
