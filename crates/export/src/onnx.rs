//! Assembling and serialising the ONNX `ModelProto`.

use petal_onnx::graph::Graph;
use petal_onnx::model::model_of;
use petal_onnx::proto::{ModelProto, StringStringEntryProto};

use crate::{nets, Error, ExportInfo, Loaded};

/// The ONNX model of `loaded`: input [`crate::INPUT_NAME`] `[batch, 3, S, S]`, one output named
/// after the output kind, `metadata_props` from `info`.
pub fn onnx_model(loaded: &Loaded, info: &ExportInfo) -> Result<ModelProto, Error> {
    let params = loaded.params();
    let mut g = Graph::default();
    let feats = nets::backbone(&mut g, &params, &loaded.arch, loaded.preprocessing.input_size as i64, crate::INPUT_NAME)?;
    let logits = nets::head(&mut g, &params, loaded.head(), &feats)?;
    // The checkpoint's calibration, as `petal predict` applies it.
    let t = loaded.predictor.temperature();
    let logits = if t == 1.0 { logits } else { g.div_scalar(&logits, "calibration", t as f32) };
    let op = match loaded.output {
        crate::OutputKind::Probabilities => "Softmax",
        crate::OutputKind::LogProbabilities => "LogSoftmax",
    };
    let out = g.softmax(&logits, "", op, 1);
    g.rename_output(&out, &info.output_name)?;
    let side = loaded.preprocessing.input_size as i64;
    let name = format!("petal_{}", info.arch);
    let doc = format!("{} classifier exported by petal from {}; output: {}", info.arch, info.source_checkpoint, info.output_name);
    let mut model = model_of(&mut g, side, (&info.output_name, info.classes.len() as i64), name, doc);
    model.metadata_props = metadata_props(info)?;
    Ok(model)
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

pub(crate) use petal_onnx::to_bytes;
