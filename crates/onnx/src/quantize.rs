//! Static int8 quantization of a float graph in onnxruntime's QDQ format: what onnxruntime's own
//! Python quantizer writes with per-channel int8 weights and uint8 activations, built here from
//! the graph petal already owns.
//!
//! - Every convolution reads its input through `QuantizeLinear` → `DequantizeLinear` (uint8, one
//!   scale per tensor, from the range measured on calibration images), its weight through
//!   `DequantizeLinear` of int8 values with one scale per output channel (symmetric), and its bias
//!   as int32 at scale `input scale × weight scale` (zero point 0).
//! - A convolution's output is quantized too; a `Relu` or `Clip(0, hi)` that is its only consumer
//!   is dropped and the output is quantized with the activation's range instead (from 0), which
//!   clamps as the activation did. An `Add` of two quantized tensors has its output quantized.
//! - Every consumer of a quantized tensor reads it through its own `DequantizeLinear`.
//! - A `BatchNormalization` that was not folded into a convolution (DenseNet's pre-activation
//!   norms, on each dense layer's concatenation) is first written as the depthwise 1×1 convolution
//!   it is ([`batch_norms_as_convolutions`]), and then quantized like any convolution: its weights,
//!   one per channel, are exact in int8, and onnxruntime runs it as an integer `QLinearConv` with
//!   the `Relu` after it folded, where the norm and the `Relu` used to run in float32 on dequantized
//!   values. On DenseNet-121 that took int8 on petal's path from 1.07× its float32 to 1.6× / 1.9×
//!   (batch 1 / 32; docs/history/benchmarks.md, "DenseNet-121 in int8").
//! - The convolutions that read the image itself (the stem) stay float32, their input unquantized:
//!   on the Lite0+1+2 ensemble of the main job, quantizing the stem too cost 4.65 points of valid
//!   top-1 against 0.49 without it, for the same speed (docs/history/benchmarks.md, "int8"). Averaging
//!   per-batch ranges instead of the overall min/max, or keeping the last convolution float, did
//!   not help (4.89 and 4.77 points).
//!
//! onnxruntime fuses each `DequantizeLinear → Conv → QuantizeLinear` group into an integer
//! convolution (`QLinearConv`, VNNI on AVX-512 CPUs) and `DequantizeLinear → Add →
//! QuantizeLinear` into `QLinearAdd`; what it does not fuse runs in float on dequantized values, so
//! the graph is correct op by op whatever the runtime fuses.
//!
//! Calibration ([`Calibrator`]) runs the float graph with every tensor to be quantized as an extra
//! output and keeps each one's minimum and maximum (onnxruntime's `MinMax` method), and the mean
//! image of every quantized convolution's input.
//!
//! **Bias correction.** Rounding a convolution's weights to int8 shifts each output channel's mean
//! by the mean of `conv(input, dequantized weight − weight)`. The calibrator measures that shift
//! exactly on its images: the mean of a convolution's output over positions is each weight tap
//! times the mean of the input values that tap reads (zero padding included), so the mean input
//! image is all it needs. [`quantize`] subtracts the shift from the float bias before the bias is
//! rounded to int32 (the empirical bias correction of Nagel et al., "Data-Free Quantization",
//! 2019). A [`Calibration`] without shifts (what records written before it hold) quantizes the
//! bias unchanged. What it does to accuracy: docs/history/benchmarks.md, "Bias correction".

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::value_info;
use crate::proto::{tensor_proto::DataType, AttributeProto, ModelProto, NodeProto, TensorProto};
use crate::{to_bytes, Error, OrtNet, INPUT_NAME};

/// The precision of the backbone's onnxruntime graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// int8 when the checkpoint records an int8 calibration that `petal quantize` accepted (it lost
    /// at most the allowed accuracy on the valid split) and the backbone runs on onnxruntime;
    /// float32 otherwise.
    #[default]
    Auto,
    /// float32: the reference.
    Fp32,
    /// int8 (static QDQ), whether or not it was accepted as the default; needs onnxruntime and a
    /// calibration recorded by `petal quantize`.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Precision::Auto),
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision {other:?} (auto, fp32 or int8)")),
        }
    }
}

/// The observed `[min, max]` of each quantized tensor, by tensor name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ranges(pub BTreeMap<String, [f32; 2]>);

/// For each quantized convolution (by its weight's name), the shift of every output channel's
/// mean over the calibration images that rounding its weights to int8 causes: what bias
/// correction subtracts (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WeightShifts(pub BTreeMap<String, Vec<f32>>);

impl WeightShifts {
    /// Whether no shift was measured (bias correction is then off).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What calibration measured: the ranges that set every scale, and the weight shifts that
/// correct the biases (empty: no correction).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The observed range of every quantized tensor.
    pub ranges: Ranges,
    /// The weight shifts; absent in records written before bias correction, which quantize as
    /// they did.
    #[serde(default, skip_serializing_if = "WeightShifts::is_empty")]
    pub weight_shifts: WeightShifts,
}

impl Calibration {
    /// The same calibration without its shifts: quantizing with it leaves the biases uncorrected.
    pub fn without_bias_correction(&self) -> Calibration {
        Calibration { ranges: self.ranges.clone(), weight_shifts: WeightShifts::default() }
    }
}

/// A quantized 2-D convolution's geometry: what maps its mean input image to the mean input each
/// weight tap reads.
#[derive(Debug, Clone)]
struct ConvGeometry {
    /// The input tensor.
    input: String,
    /// Input channels (all groups).
    channels: usize,
    groups: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    /// `[top, left, bottom, right]`.
    pads: [usize; 4],
    dilations: [usize; 2],
}

impl ConvGeometry {
    fn of(n: &NodeProto, w: &TensorProto) -> Result<ConvGeometry, Error> {
        let name = n.name.as_deref().unwrap_or("?");
        let dims: Vec<usize> = w.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims.len() != 4 {
            return Err(Error::Graph(format!("convolution {name}: only 2-D convolutions are quantized (weight of rank {})", dims.len())));
        }
        let ints = |key: &str, default: &[usize]| -> Vec<usize> {
            match n.attribute.iter().find(|a| a.name.as_deref() == Some(key)) {
                Some(a) => a.ints.iter().map(|&v| v.max(0) as usize).collect(),
                None => default.to_vec(),
            }
        };
        let (strides, pads, dilations) = (ints("strides", &[1, 1]), ints("pads", &[0; 4]), ints("dilations", &[1, 1]));
        if strides.len() != 2 || pads.len() != 4 || dilations.len() != 2 {
            return Err(Error::Graph(format!("convolution {name}: unexpected strides, pads or dilations")));
        }
        let auto_pad = n.attribute.iter().find(|a| a.name.as_deref() == Some("auto_pad")).and_then(|a| a.s.as_deref());
        if auto_pad.is_some_and(|p| p != b"NOTSET") {
            return Err(Error::Graph(format!("convolution {name}: auto_pad is not supported; pads must be explicit")));
        }
        let groups = group(n).max(1) as usize;
        Ok(ConvGeometry {
            input: n.input[0].clone(),
            channels: dims[1] * groups,
            groups,
            kernel: [dims[2], dims[3]],
            strides: [strides[0], strides[1]],
            pads: [pads[0], pads[1], pads[2], pads[3]],
            dilations: [dilations[0], dilations[1]],
        })
    }

    /// For each input channel and tap (`[C][kh][kw]` row-major), the mean of the input value the
    /// tap reads over every output position (0 where it reads padding), from the channel's mean
    /// image `mean` (`[C][h][w]`).
    fn tap_means(&self, mean: &[f64], [h, w]: [usize; 2]) -> Vec<f64> {
        // The input rows (columns) tap `i` reads at each output row (column); padding is skipped.
        let reads = |axis: usize, size: usize| -> Vec<Vec<usize>> {
            let (k, s, d, before, after) = (self.kernel[axis], self.strides[axis], self.dilations[axis], self.pads[axis], self.pads[axis + 2]);
            let out = (size + before + after).saturating_sub(d * (k - 1) + 1) / s + 1;
            (0..k).map(|i| (0..out).map(|o| o * s + i * d).filter(|&p| p >= before && p - before < size).map(|p| p - before).collect()).collect()
        };
        let (rows, cols) = (reads(0, h), reads(1, w));
        let outputs = {
            let out = |axis: usize, size: usize| {
                (size + self.pads[axis] + self.pads[axis + 2]).saturating_sub(self.dilations[axis] * (self.kernel[axis] - 1) + 1) / self.strides[axis]
                    + 1
            };
            (out(0, h) * out(1, w)) as f64
        };
        let mut taps = Vec::with_capacity(self.channels * self.kernel[0] * self.kernel[1]);
        for plane in mean.chunks_exact(h * w) {
            for r in &rows {
                for c in &cols {
                    let sum: f64 = r.iter().map(|&y| c.iter().map(|&x| plane[y * w + x]).sum::<f64>()).sum();
                    taps.push(sum / outputs);
                }
            }
        }
        taps
    }
}

/// Where the quantized tensors are: what calibration measures and the rewrite quantizes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Tensors quantized to uint8, in graph order (the input first).
    pub tensors: Vec<String>,
    /// Convolution node index → index of the `Relu`/`Clip` folded into its output quantization.
    fused: HashMap<usize, usize>,
    /// Indices of the convolutions quantized (their input is in `tensors`; the stem's is not).
    convs: HashSet<usize>,
    /// The geometry of each quantized convolution, by its weight's name.
    geometry: BTreeMap<String, ConvGeometry>,
}

fn graph_of(model: &ModelProto) -> Result<&crate::proto::GraphProto, Error> {
    model.graph.as_ref().ok_or_else(|| Error::Graph("the model has no graph".into()))
}

fn op(n: &NodeProto) -> &str {
    n.op_type.as_deref().unwrap_or("")
}

/// A convolution's `group` attribute (1 when absent).
fn group(n: &NodeProto) -> i64 {
    n.attribute.iter().find(|a| a.name.as_deref() == Some("group")).and_then(|a| a.i).unwrap_or(1)
}

/// `model` with every `BatchNormalization` whose parameters are initializers written as the
/// depthwise 1×1 convolution it computes: weight `scale / √(var + ε)` and bias `B − mean × weight`
/// per channel (in f64, stored as f32), one group per channel, the same output name. The float
/// answers agree to f32 rounding; [`Plan::of`] then quantizes it like any convolution. A model
/// without such norms comes back unchanged.
pub fn batch_norms_as_convolutions(model: &ModelProto) -> Result<ModelProto, Error> {
    let g = graph_of(model)?;
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().filter_map(|t| Some((t.name.as_deref()?, t))).collect();
    let mut nodes = Vec::with_capacity(g.node.len());
    let mut added: Vec<TensorProto> = Vec::new();
    let mut replaced: HashSet<&str> = HashSet::new();
    for n in &g.node {
        let params: Option<Vec<&TensorProto>> = (op(n) == "BatchNormalization" && n.input.len() == 5 && n.output.len() == 1)
            .then(|| n.input[1..].iter().map(|i| inits.get(i.as_str()).copied()).collect::<Option<Vec<_>>>())
            .flatten();
        let Some(params) = params else {
            nodes.push(n.clone());
            continue;
        };
        let [scale, bias, mean, var] = [0, 1, 2, 3].map(|k| floats(params[k]));
        let (scale, bias, mean, var) = (scale?, bias?, mean?, var?);
        let c = scale.len();
        if [bias.len(), mean.len(), var.len()] != [c; 3] {
            return Err(Error::Graph(format!("batch norm {} has parameters of different lengths", n.name.as_deref().unwrap_or("?"))));
        }
        let eps = n.attribute.iter().find(|a| a.name.as_deref() == Some("epsilon")).and_then(|a| a.f).unwrap_or(1e-5);
        let w: Vec<f64> = scale.iter().zip(&var).map(|(&s, &v)| f64::from(s) / (f64::from(v) + f64::from(eps)).sqrt()).collect();
        let b: Vec<f32> = bias.iter().zip(&mean).zip(&w).map(|((&b, &m), &w)| (f64::from(b) - f64::from(m) * w) as f32).collect();
        let scope = n.name.clone().unwrap_or_else(|| n.output[0].clone());
        let (wname, bname) = (format!("{scope}.depthwise_weight"), format!("{scope}.depthwise_bias"));
        added.push(tensor(wname.clone(), vec![c as i64, 1, 1, 1], DataType::Float, w.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()));
        added.push(tensor(bname.clone(), vec![c as i64], DataType::Float, b.iter().flat_map(|v| v.to_le_bytes()).collect()));
        let ints = |name: &str, v: &[i64]| AttributeProto {
            name: Some(name.into()),
            r#type: Some(crate::proto::attribute_proto::AttributeType::Ints as i32),
            ints: v.to_vec(),
            ..Default::default()
        };
        let group = AttributeProto {
            name: Some("group".into()),
            r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
            i: Some(c as i64),
            ..Default::default()
        };
        nodes.push(node(
            format!("{scope}_as_depthwise_conv"),
            "Conv",
            vec![n.input[0].clone(), wname, bname],
            n.output[0].clone(),
            vec![group, ints("kernel_shape", &[1, 1]), ints("strides", &[1, 1]), ints("pads", &[0; 4]), ints("dilations", &[1, 1])],
        ));
        replaced.extend(n.input[1..].iter().map(String::as_str));
    }
    let mut m = model.clone();
    let out = m.graph.as_mut().expect("checked above");
    let still: HashSet<&str> = nodes.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let mut initializer: Vec<TensorProto> =
        g.initializer.iter().filter(|t| t.name.as_deref().is_some_and(|n| !replaced.contains(n) || still.contains(n))).cloned().collect();
    initializer.extend(added);
    out.node = nodes;
    out.initializer = initializer;
    Ok(m)
}

/// The scalar float value of initializer `name`, if it is one.
fn scalar(inits: &HashMap<&str, &TensorProto>, name: &str) -> Option<f32> {
    let t = inits.get(name)?;
    if t.data_type != Some(DataType::Float as i32) || t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    match (&t.raw_data, t.float_data.first()) {
        (Some(raw), _) if raw.len() == 4 => Some(f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]])),
        (_, Some(v)) => Some(*v),
        _ => None,
    }
}

impl Plan {
    /// The plan for `model`: every convolution's input and output (after a folded activation), and
    /// the outputs of additions of two quantized tensors.
    pub fn of(model: &ModelProto) -> Result<Plan, Error> {
        let g = graph_of(model)?;
        let inits: HashMap<&str, &TensorProto> = g.initializer.iter().filter_map(|t| Some((t.name.as_deref()?, t))).collect();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in g.node.iter().enumerate() {
            for x in &n.input {
                consumers.entry(x.as_str()).or_default().push(i);
            }
        }
        let outputs: HashSet<&str> = g.output.iter().filter_map(|o| o.name.as_deref()).collect();
        // The convolutions that read the image stay float (see the module docs).
        let skip = |i: usize| g.node[i].input[0] == INPUT_NAME;
        let mut fused = HashMap::new();
        let mut convs = HashSet::new();
        let mut geometry = BTreeMap::new();
        let mut tensors: Vec<String> = Vec::new();
        let mut set: HashSet<String> = HashSet::new();
        let add = |t: &str, tensors: &mut Vec<String>, set: &mut HashSet<String>| {
            if !inits.contains_key(t) && set.insert(t.to_string()) {
                tensors.push(t.to_string());
            }
        };
        for (i, n) in g.node.iter().enumerate() {
            match op(n) {
                "Conv" if n.input.len() >= 2 && inits.contains_key(n.input[1].as_str()) && !skip(i) => {
                    convs.insert(i);
                    add(&n.input[0], &mut tensors, &mut set);
                    geometry.insert(n.input[1].clone(), ConvGeometry::of(n, inits[n.input[1].as_str()])?);
                    let y = n.output[0].as_str();
                    let only = consumers.get(y).filter(|c| c.len() == 1).map(|c| c[0]);
                    let act = only.filter(|&a| {
                        let a = &g.node[a];
                        match op(a) {
                            "Relu" => true,
                            "Clip" => {
                                a.input.get(1).and_then(|lo| scalar(&inits, lo)) == Some(0.0)
                                    && a.input.get(2).is_some_and(|hi| scalar(&inits, hi).is_some())
                            }
                            _ => false,
                        }
                    });
                    match act {
                        Some(a) if !outputs.contains(y) => {
                            fused.insert(i, a);
                            add(&g.node[a].output[0], &mut tensors, &mut set);
                        }
                        _ => add(y, &mut tensors, &mut set),
                    }
                }
                "Add" if n.input.len() == 2 && n.input.iter().all(|x| set.contains(x)) => add(&n.output[0], &mut tensors, &mut set),
                _ => {}
            }
        }
        if tensors.is_empty() {
            return Err(Error::Graph("the graph has no convolution to quantize".into()));
        }
        Ok(Plan { tensors, fused, convs, geometry })
    }

    /// The float model with every planned tensor as an extra output (the graph input excepted):
    /// what [`Calibrator`] runs.
    pub fn calibration_model(&self, model: &ModelProto) -> Result<ModelProto, Error> {
        let mut m = model.clone();
        let g = m.graph.as_mut().ok_or_else(|| Error::Graph("the model has no graph".into()))?;
        let present: HashSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
        for t in &self.tensors {
            if t != INPUT_NAME && !present.contains(t) {
                g.output.push(value_info(t, &[]));
            }
        }
        for o in g.output.iter_mut().skip(1) {
            // Shapes of intermediate tensors are left to onnxruntime.
            if let Some(crate::proto::type_proto::Value::TensorType(t)) = o.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                t.shape = None;
            }
        }
        Ok(m)
    }
}

/// Measures the range of every planned tensor over calibration batches.
pub struct Calibrator {
    net: OrtNet,
    plan: Plan,
    ranges: BTreeMap<String, [f32; 2]>,
    /// The sum of every quantized convolution's input over the images (`[C][h][w]`), its `[h, w]`.
    sums: BTreeMap<String, (Vec<f64>, [usize; 2])>,
    /// The float weights of the quantized convolutions, by name.
    weights: BTreeMap<String, Vec<f32>>,
    images: usize,
}

impl Calibrator {
    /// A calibrator of `model` (float) with `threads` intra-op threads (0: one per core).
    pub fn new(model: &ModelProto, threads: usize) -> Result<Calibrator, Error> {
        let model = &batch_norms_as_convolutions(model)?;
        let plan = Plan::of(model)?;
        let net = OrtNet::new(&to_bytes(&plan.calibration_model(model)?), threads)?;
        let g = graph_of(model)?;
        let mut weights = BTreeMap::new();
        for t in &g.initializer {
            if let Some(name) = t.name.as_deref().filter(|n| plan.geometry.contains_key(*n)) {
                weights.insert(name.to_string(), floats(t)?);
            }
        }
        Ok(Calibrator { net, plan, ranges: BTreeMap::new(), sums: BTreeMap::new(), weights, images: 0 })
    }

    fn observe_values(&mut self, name: &str, values: &[f32]) {
        let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let r = self.ranges.entry(name.to_string()).or_insert([f32::INFINITY, f32::NEG_INFINITY]);
        r[0] = r[0].min(lo);
        r[1] = r[1].max(hi);
    }

    /// Adds the images of `values` (`[n, c, h, w]` row-major) to the sum image of `name`.
    fn observe_images(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<(), Error> {
        let &[_, c, h, w] = shape else {
            return Err(Error::Graph(format!("{name} has shape {shape:?}, not [n, c, h, w]")));
        };
        let (sum, hw) = self.sums.entry(name.to_string()).or_insert_with(|| (vec![0.0; c * h * w], [h, w]));
        if sum.len() != c * h * w || *hw != [h, w] {
            return Err(Error::Graph(format!("{name} changed shape between batches ({shape:?}): calibrate on images of one size")));
        }
        for image in values.chunks_exact((c * h * w).max(1)) {
            for (s, &v) in sum.iter_mut().zip(image) {
                *s += f64::from(v);
            }
        }
        Ok(())
    }

    /// Runs one batch (`data` row-major with dimensions `shape`) and widens every range.
    pub fn observe(&mut self, data: &[f32], shape: &[usize]) -> Result<(), Error> {
        let outputs = self.net.run_all(data, shape)?;
        if self.plan.tensors.iter().any(|t| t == INPUT_NAME) {
            self.observe_values(INPUT_NAME, data);
        }
        for crate::runtime::NamedOutput { name, dims, values } in outputs {
            if self.plan.tensors.contains(&name) {
                self.observe_values(&name, &values);
            }
            if self.plan.geometry.values().any(|g| g.input == name) {
                self.observe_images(&name, &dims, &values)?;
            }
        }
        self.images += shape.first().copied().unwrap_or(0);
        Ok(())
    }

    /// Images observed so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// The ranges and weight shifts measured; an error when nothing was observed.
    pub fn calibration(&self) -> Result<Calibration, Error> {
        if self.images == 0 {
            return Err(Error::Graph("calibration saw no image".into()));
        }
        let missing: Vec<&String> = self.plan.tensors.iter().filter(|t| !self.ranges.contains_key(*t)).collect();
        if let Some(t) = missing.first() {
            return Err(Error::Graph(format!("calibration measured no range for {t} ({} tensors missing)", missing.len())));
        }
        let mut shifts = BTreeMap::new();
        for (wname, geo) in &self.plan.geometry {
            let (sum, hw) = self.sums.get(&geo.input).ok_or_else(|| Error::Graph(format!("calibration measured no mean of {}", geo.input)))?;
            if sum.len() != geo.channels * hw[0] * hw[1] {
                return Err(Error::Graph(format!(
                    "{} has {} channels, its convolution {wname} reads {}",
                    geo.input,
                    sum.len() / (hw[0] * hw[1]).max(1),
                    geo.channels
                )));
            }
            let mean: Vec<f64> = sum.iter().map(|s| s / self.images as f64).collect();
            let taps = geo.tap_means(&mean, *hw);
            let w = &self.weights[wname];
            let o = w.len() / (geo.channels / geo.groups * geo.kernel[0] * geo.kernel[1]).max(1);
            let (q, scales) = quantize_weights(w, o);
            let shift = weight_error_shift(w, &q, &scales, &taps, geo.groups);
            shifts.insert(wname.clone(), shift.iter().map(|&d| d as f32).collect());
        }
        Ok(Calibration { ranges: Ranges(self.ranges.clone()), weight_shifts: WeightShifts(shifts) })
    }
}

/// uint8 scale and zero point of the range `[lo, hi]` widened to hold 0 (as onnxruntime does).
pub fn activation_params([lo, hi]: [f32; 2]) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi - lo > 1e-12 { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Per-output-channel symmetric int8 weights of `w` (`[O, ...]` row-major, `o` channels): values
/// and scales (a channel of zeros gets scale 1).
pub fn quantize_weights(w: &[f32], o: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / o.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(o);
    for ch in w.chunks(per.max(1)) {
        let m = ch.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 { m / 127.0 } else { 1.0 };
        scales.push(s);
        q.extend(ch.iter().map(|v| (v / s).round().clamp(-127.0, 127.0) as i8));
    }
    (q, scales)
}

fn floats(t: &TensorProto) -> Result<Vec<f32>, Error> {
    let name = t.name.as_deref().unwrap_or("?");
    if t.data_type != Some(DataType::Float as i32) {
        return Err(Error::Graph(format!("initializer {name} is not float")));
    }
    match &t.raw_data {
        Some(raw) => Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()),
        None => Ok(t.float_data.clone()),
    }
}

fn tensor(name: String, dims: Vec<i64>, ty: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto { name: Some(name), dims, data_type: Some(ty as i32), raw_data: Some(raw), ..Default::default() }
}

fn node(name: String, op: &str, inputs: Vec<String>, output: String, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto { input: inputs, output: vec![output], name: Some(name), op_type: Some(op.into()), attribute, ..Default::default() }
}

fn axis(v: i64) -> AttributeProto {
    AttributeProto {
        name: Some("axis".into()),
        r#type: Some(crate::proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// The shift of each output channel's mean that rounding the weights causes: for output channel
/// `o`, `Σ (dequantized − float weight) × the mean input that weight reads`. `w` and `q` are
/// `[O][C/groups][taps]`, `scales` has `O` entries, and `tap_means` is `[C][taps]`: output channel
/// `o` of group `g` reads input channels `g·C/groups ..`. Bias correction subtracts it.
pub fn weight_error_shift(w: &[f32], q: &[i8], scales: &[f32], tap_means: &[f64], groups: usize) -> Vec<f64> {
    let o = scales.len();
    let per_out = w.len() / o.max(1);
    let per_group_in = tap_means.len() / groups.max(1);
    let out_per_group = o / groups.max(1);
    (0..o)
        .map(|oc| {
            let first = (oc / out_per_group.max(1)) * per_group_in;
            (0..per_out)
                .map(|k| {
                    let i = oc * per_out + k;
                    (f64::from(q[i]) * f64::from(scales[oc]) - f64::from(w[i])) * tap_means[first + k]
                })
                .sum()
        })
        .collect()
}

/// The QDQ int8 model of the float `model` with the `calibration`'s ranges, its biases corrected
/// by its weight shifts when it has them (see the module docs).
pub fn quantize(model: &ModelProto, calibration: &Calibration) -> Result<ModelProto, Error> {
    let model = &batch_norms_as_convolutions(model)?;
    let ranges = &calibration.ranges;
    let plan = Plan::of(model)?;
    let g = graph_of(model)?;
    let mut params: HashMap<&str, (f32, u8)> = HashMap::new();
    for t in &plan.tensors {
        let r = ranges.0.get(t).ok_or_else(|| Error::Graph(format!("no calibrated range for {t}: calibrate again with this graph")))?;
        if !(r[0].is_finite() && r[1].is_finite()) {
            return Err(Error::Graph(format!("the calibrated range of {t} is not finite ({r:?})")));
        }
        params.insert(t.as_str(), activation_params(*r));
    }
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().filter_map(|t| Some((t.name.as_deref()?, t))).collect();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut replaced: HashSet<String> = HashSet::new();
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut dq_count: HashMap<String, usize> = HashMap::new();
    let removed: HashSet<usize> = plan.fused.values().copied().collect();

    // Scale and zero point initializers and the QuantizeLinear node of tensor `t`.
    let quantize_node = |t: &str, new_inits: &mut Vec<TensorProto>, nodes: &mut Vec<NodeProto>| {
        let (s, zp) = params[t];
        new_inits.push(tensor(format!("{t}_scale"), vec![], DataType::Float, s.to_le_bytes().to_vec()));
        new_inits.push(tensor(format!("{t}_zero_point"), vec![], DataType::Uint8, vec![zp]));
        nodes.push(node(
            format!("{t}_QuantizeLinear"),
            "QuantizeLinear",
            vec![t.to_string(), format!("{t}_scale"), format!("{t}_zero_point")],
            format!("{t}_quantized"),
            vec![],
        ));
    };
    if params.contains_key(INPUT_NAME) {
        quantize_node(INPUT_NAME, &mut new_inits, &mut nodes);
    }
    for (i, n) in g.node.iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        let mut n = n.clone();
        if let Some(&a) = plan.fused.get(&i) {
            n.output = vec![g.node[a].output[0].clone()];
        }
        let conv = plan.convs.contains(&i);
        for k in 0..n.input.len() {
            let x = n.input[k].clone();
            if params.contains_key(x.as_str()) {
                let c = dq_count.entry(x.clone()).or_insert(0);
                *c += 1;
                let out = format!("{x}_dequantized_{c}");
                nodes.push(node(
                    format!("{x}_DequantizeLinear_{c}"),
                    "DequantizeLinear",
                    vec![format!("{x}_quantized"), format!("{x}_scale"), format!("{x}_zero_point")],
                    out.clone(),
                    vec![],
                ));
                n.input[k] = out;
            }
        }
        if conv {
            let w = inits[g.node[i].input[1].as_str()];
            let wname = w.name.clone().unwrap_or_default();
            let o = *w.dims.first().ok_or_else(|| Error::Graph(format!("convolution weight {wname} has no dimensions")))? as usize;
            let wf = floats(w)?;
            let (q, scales) = quantize_weights(&wf, o);
            new_inits.push(tensor(format!("{wname}_quantized"), w.dims.clone(), DataType::Int8, q.iter().map(|v| *v as u8).collect()));
            new_inits.push(tensor(format!("{wname}_scale"), vec![o as i64], DataType::Float, scales.iter().flat_map(|s| s.to_le_bytes()).collect()));
            new_inits.push(tensor(format!("{wname}_zero_point"), vec![o as i64], DataType::Int8, vec![0; o]));
            nodes.push(node(
                format!("{wname}_DequantizeLinear"),
                "DequantizeLinear",
                vec![format!("{wname}_quantized"), format!("{wname}_scale"), format!("{wname}_zero_point")],
                format!("{wname}_dequantized"),
                vec![axis(0)],
            ));
            n.input[1] = format!("{wname}_dequantized");
            replaced.insert(wname.clone());
            let x = g.node[i].input[0].as_str();
            let shift: Option<Vec<f64>> = match calibration.weight_shifts.0.get(&wname) {
                Some(shift) if shift.len() == o => Some(shift.iter().map(|&d| f64::from(d)).collect()),
                Some(shift) => {
                    return Err(Error::Graph(format!(
                        "the calibrated shift of {wname} has {} channels, not {o}: calibrate again with this graph",
                        shift.len()
                    )))
                }
                None if calibration.weight_shifts.is_empty() => None,
                None => return Err(Error::Graph(format!("no calibrated weight shift for {wname}: calibrate again with this graph"))),
            };
            let bias = match g.node[i].input.get(2).filter(|b| !b.is_empty()) {
                Some(b) => {
                    let t = inits.get(b.as_str()).ok_or_else(|| Error::Graph(format!("the bias {b} of a convolution is not an initializer")))?;
                    Some((b.clone(), t.dims.clone(), floats(t)?))
                }
                // A convolution without a bias gets one to carry the correction.
                None => shift.as_ref().map(|_| (format!("{wname}_bias"), vec![o as i64], vec![0.0; o])),
            };
            if let (Some((bname, bdims, bias)), Some(&(sx, _))) = (bias, params.get(x)) {
                // In f64 until the rounding, so that the correction is not lost to f32's rounding
                // of a large bias.
                let shift = shift.unwrap_or_else(|| vec![0.0; bias.len()]);
                let bscales: Vec<f32> = scales.iter().map(|sw| sx * sw).collect();
                let qb: Vec<i32> = bias
                    .iter()
                    .zip(&shift)
                    .zip(&bscales)
                    .map(|((v, d), s)| ((f64::from(*v) - d) / f64::from(*s)).round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
                    .collect();
                new_inits.push(tensor(format!("{bname}_quantized"), bdims, DataType::Int32, qb.iter().flat_map(|v| v.to_le_bytes()).collect()));
                new_inits.push(tensor(
                    format!("{bname}_scale"),
                    vec![o as i64],
                    DataType::Float,
                    bscales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ));
                nodes.push(node(
                    format!("{bname}_DequantizeLinear"),
                    "DequantizeLinear",
                    vec![format!("{bname}_quantized"), format!("{bname}_scale")],
                    format!("{bname}_dequantized"),
                    vec![axis(0)],
                ));
                if n.input.len() < 3 {
                    n.input.resize(3, String::new());
                }
                n.input[2] = format!("{bname}_dequantized");
                replaced.insert(bname);
            }
        }
        let outs = n.output.clone();
        nodes.push(n);
        for y in outs {
            if params.contains_key(y.as_str()) {
                quantize_node(&y, &mut new_inits, &mut nodes);
            }
        }
    }
    let used: HashSet<&str> = nodes.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let mut initializer: Vec<TensorProto> =
        g.initializer.iter().filter(|t| t.name.as_deref().is_some_and(|n| !replaced.contains(n) && used.contains(n))).cloned().collect();
    initializer.extend(new_inits);
    let mut m = model.clone();
    let out = m.graph.as_mut().expect("checked above");
    out.node = nodes;
    out.initializer = initializer;
    let corrected = if calibration.weight_shifts.is_empty() { "" } else { ", bias-corrected" };
    m.doc_string = Some(format!("{} (int8, QDQ, per-channel weights{corrected})", model.doc_string.as_deref().unwrap_or("")));
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_hold_zero_and_the_range() {
        let (s, zp) = activation_params([0.0, 6.0]);
        assert_eq!(zp, 0);
        assert!((s * 255.0 - 6.0).abs() < 1e-6);
        let (s, zp) = activation_params([-1.0, 3.0]);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, 64); // round(1 / (4/255)) = round(63.75)
                            // A positive-only range is widened to hold 0.
        assert_eq!(activation_params([2.0, 4.0]).1, 0);
        // A constant zero tensor still gets a usable scale.
        assert_eq!(activation_params([0.0, 0.0]), (1.0, 0));
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let w = [1.0, -0.5, 0.25, 0.0, /* channel 2 */ 0.0, 0.0, 0.0, 0.0, /* channel 3 */ -2.0, 1.0, 0.5, 2.0];
        let (q, s) = quantize_weights(&w, 3);
        assert_eq!(s, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(&q[..4], &[127, -64, 32, 0]);
        assert_eq!(&q[4..8], &[0; 4]);
        assert_eq!(&q[8..], &[-127, 64, 32, 127]);
        // Dequantized values are within half a step of the originals.
        for (i, (v, qv)) in w.iter().zip(&q).enumerate() {
            let step = s[i / 4];
            assert!((f32::from(*qv) * step - v).abs() <= step / 2.0 + 1e-7, "{i}");
        }
    }

    #[test]
    fn the_weight_error_shift_reads_each_output_channels_own_inputs() {
        // Two groups of 2 input channels, 2 output channels each, 1×2 kernels (2 taps): output
        // channel 3 reads input channels 2 and 3.
        let w: Vec<f32> = (0..16).map(|i| 0.37 * i as f32 - 2.0).collect();
        let (q, s) = quantize_weights(&w, 4);
        let taps = [1.0, 0.5, -2.0, 0.25, 0.5, 0.5, 3.0, -1.0];
        let shift = weight_error_shift(&w, &q, &s, &taps, 2);
        for (oc, d) in shift.iter().enumerate() {
            let first = (oc / 2) * 2;
            let want: f64 = (0..4).map(|k| (f64::from(q[oc * 4 + k]) * f64::from(s[oc]) - f64::from(w[oc * 4 + k])) * taps[first * 2 + k]).sum();
            assert!((d - want).abs() < 1e-12, "channel {oc}: {d} vs {want}");
        }
        // Depthwise (one group per channel) with weights that int8 holds (up to the scale's own
        // f32 rounding): no shift.
        let exact = [1.0f32, -1.0, 0.5, 0.0];
        let (q, s) = quantize_weights(&exact, 2);
        assert!(weight_error_shift(&exact, &q, &s, &[4.0, 5.0, 1.0, 2.0], 2).iter().all(|d| d.abs() < 1e-6));
    }

    #[test]
    fn tap_means_are_the_mean_input_each_tap_reads_padding_included() {
        // Against the definition, output position by output position, for odd shapes, strides,
        // asymmetric padding and dilation.
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / f64::from(1u32 << 31) - 0.5
        };
        for (kernel, strides, pads, dilations, h, w) in [
            ([3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 5, 4),
            ([5, 5], [2, 2], [2, 2, 2, 2], [1, 1], 7, 7),
            ([3, 3], [2, 2], [0, 0, 1, 1], [1, 1], 8, 6),
            ([1, 1], [1, 1], [0, 0, 0, 0], [1, 1], 3, 3),
            ([3, 2], [1, 3], [2, 0, 1, 1], [2, 1], 9, 10),
        ] {
            let geo = ConvGeometry { input: "x".into(), channels: 2, groups: 1, kernel, strides, pads, dilations };
            let mean: Vec<f64> = (0..2 * h * w).map(|_| next()).collect();
            let got = geo.tap_means(&mean, [h, w]);
            let out = |a: usize, size: usize| (size + pads[a] + pads[a + 2] - dilations[a] * (kernel[a] - 1) - 1) / strides[a] + 1;
            let (oh, ow) = (out(0, h), out(1, w));
            let mut want = Vec::new();
            for c in 0..2 {
                for i in 0..kernel[0] {
                    for j in 0..kernel[1] {
                        let mut sum = 0.0;
                        for oy in 0..oh {
                            for ox in 0..ow {
                                let (y, x) = (
                                    (oy * strides[0] + i * dilations[0]) as i64 - pads[0] as i64,
                                    (ox * strides[1] + j * dilations[1]) as i64 - pads[1] as i64,
                                );
                                if (0..h as i64).contains(&y) && (0..w as i64).contains(&x) {
                                    sum += mean[c * h * w + y as usize * w + x as usize];
                                }
                            }
                        }
                        want.push(sum / (oh * ow) as f64);
                    }
                }
            }
            assert_eq!(got.len(), want.len(), "{kernel:?} {strides:?} {pads:?}");
            for (k, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!((g - e).abs() < 1e-12, "{kernel:?} {strides:?} {pads:?} {dilations:?}: tap {k}: {g} vs {e}");
            }
        }
    }
}
