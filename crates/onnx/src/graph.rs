//! A small ONNX graph builder: one method per layer type, named like `torch.onnx.export` names
//! things (`/features/conv0/Conv`, output `/features/conv0/Conv_output_0`, initializers under the
//! PyTorch parameter names), so an architecture is described in a few lines per block.
//!
//! Architectures call the layer methods with the PyTorch module path of each layer (`scope`),
//! reading weights from [`Params`]. Eval-mode batch norms that directly follow a convolution are
//! folded into it ([`Graph::conv_bn`]), as `torch.onnx.export` does in eval mode; the others
//! become `BatchNormalization` nodes.

use std::collections::HashMap;

use tch::Tensor;

use crate::proto::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto, TensorProto};
use crate::Error;

/// A float tensor read from the network's weights: shape and values (row-major).
#[derive(Debug, Clone)]
pub struct Param {
    /// Dimensions.
    pub shape: Vec<i64>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// The network's weights by PyTorch parameter name (`features.conv0.weight`, ...).
#[derive(Debug)]
pub struct Params {
    tensors: HashMap<String, Tensor>,
}

impl Params {
    /// Wraps the variables of a `VarStore` (already checked against the architecture by the
    /// strict load).
    pub fn new(tensors: HashMap<String, Tensor>) -> Self {
        Params { tensors }
    }

    /// The parameters whose names start with `prefix`, without it (an ensemble member's own names).
    pub fn scoped(&self, prefix: &str) -> Params {
        let tensors = self.tensors.iter().filter_map(|(k, t)| Some((k.strip_prefix(prefix)?.to_string(), t.shallow_clone()))).collect();
        Params { tensors }
    }

    /// The float tensor `name`; a missing name is an error naming it.
    pub fn get(&self, name: &str) -> Result<Param, Error> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Graph(format!("the network has no parameter {name:?}")))?;
        let t = t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).contiguous();
        let data = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|e| Error::Graph(format!("reading {name}: {e}")))?;
        Ok(Param { shape: t.size(), data })
    }
}

/// Hyper-parameters of a 2-D convolution node.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Stride along both axes.
    pub stride: i64,
    /// Zero padding `[top, left, bottom, right]` (ONNX's `pads` order), possibly asymmetric.
    pub pads: [i64; 4],
    /// Groups (channels for a depthwise convolution).
    pub groups: i64,
}

impl ConvSpec {
    /// Stride `stride`, the same `pad` on every side, one group.
    pub fn new(stride: i64, pad: i64) -> Self {
        ConvSpec { stride, pads: [pad; 4], groups: 1 }
    }
}

/// An ONNX graph under construction: nodes in topological order plus initializers.
#[derive(Debug, Default)]
pub struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    used: HashMap<String, usize>,
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Int as i32), i: Some(v), ..Default::default() }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Ints as i32), ints: v.to_vec(), ..Default::default() }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(AttributeType::Float as i32), f: Some(v), ..Default::default() }
}

/// `features.denseblock1.denselayer1.conv1` → `/features/denseblock1/denselayer1/conv1`.
fn scope_path(scope: &str) -> String {
    if scope.is_empty() {
        String::new()
    } else {
        format!("/{}", scope.replace('.', "/"))
    }
}

impl Graph {
    /// The nodes (in topological order) and the initializers, for a `GraphProto`.
    pub fn into_parts(self) -> (Vec<NodeProto>, Vec<TensorProto>) {
        (self.nodes, self.initializers)
    }

    /// Adds a float initializer `name` (made unique if taken) and returns its name.
    pub fn initializer(&mut self, name: &str, p: Param) -> String {
        let name = self.unique(name);
        let raw: Vec<u8> = p.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: p.shape,
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 initializer `name` (a shape for `Reshape`) and returns its name.
    pub fn initializer_i64(&mut self, name: &str, shape: Vec<i64>, values: &[i64]) -> String {
        let name = self.unique(name);
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: shape,
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..Default::default()
        });
        name
    }

    fn unique(&mut self, name: &str) -> String {
        let n = self.used.entry(name.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            name.to_string()
        } else {
            format!("{name}.{}", *n - 1)
        }
    }

    /// Adds node `op` under `scope` with one output, named as `torch.onnx.export` names them.
    pub fn node(&mut self, scope: &str, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let name = self.unique(&format!("{}/{op}", scope_path(scope)));
        let output = format!("{name}_output_0");
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op.into()),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    fn conv_node(&mut self, x: &str, scope: &str, w: Param, b: Option<Param>, spec: ConvSpec) -> String {
        let kernel = [w.shape[2], w.shape[3]];
        let w = self.initializer(&format!("{scope}.weight"), w);
        let b = b.map(|b| self.initializer(&format!("{scope}.bias"), b));
        let mut inputs = vec![x, w.as_str()];
        if let Some(b) = &b {
            inputs.push(b);
        }
        let attrs = vec![
            attr_ints("dilations", &[1, 1]),
            attr_int("group", spec.groups),
            attr_ints("kernel_shape", &kernel),
            attr_ints("pads", &spec.pads),
            attr_ints("strides", &[spec.stride, spec.stride]),
        ];
        self.node(scope, "Conv", &inputs, attrs)
    }

    /// A convolution with the weight (and bias, when the network has one) of module `scope`.
    pub fn conv(&mut self, x: &str, params: &Params, scope: &str, has_bias: bool, spec: ConvSpec) -> Result<String, Error> {
        let w = params.get(&format!("{scope}.weight"))?;
        let b = if has_bias { Some(params.get(&format!("{scope}.bias"))?) } else { None };
        Ok(self.conv_node(x, scope, w, b, spec))
    }

    /// The convolution `conv` (with its bias when `has_bias`) followed by the eval-mode batch norm
    /// `bn` (epsilon `eps`), emitted as one `Conv` with the folded weight `w·γ/√(σ²+ε)` and bias
    /// `β + (b − μ)·γ/√(σ²+ε)` (computed in f64, stored in f32).
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(&mut self, x: &str, params: &Params, conv: &str, has_bias: bool, bn: &str, eps: f64, spec: ConvSpec) -> Result<String, Error> {
        let mut w = params.get(&format!("{conv}.weight"))?;
        let [gamma, beta, mean, var] = self.bn_params(params, bn)?;
        let c_out = w.shape[0] as usize;
        if gamma.data.len() != c_out {
            return Err(Error::Graph(format!("{bn} has {} channels but {conv} has {c_out} outputs", gamma.data.len())));
        }
        let conv_bias = if has_bias { params.get(&format!("{conv}.bias"))?.data } else { vec![0.0; c_out] };
        let per_out = w.data.len() / c_out;
        let mut bias = Vec::with_capacity(c_out);
        for (o, (weights, cb)) in w.data.chunks_mut(per_out).zip(&conv_bias).enumerate() {
            let scale = gamma.data[o] as f64 / (var.data[o] as f64 + eps).sqrt();
            for v in weights {
                *v = (*v as f64 * scale) as f32;
            }
            bias.push((beta.data[o] as f64 + (*cb as f64 - mean.data[o] as f64) * scale) as f32);
        }
        let b = Param { shape: vec![c_out as i64], data: bias };
        Ok(self.conv_node(x, conv, w, Some(b), spec))
    }

    fn bn_params(&self, params: &Params, bn: &str) -> Result<[Param; 4], Error> {
        Ok([
            params.get(&format!("{bn}.weight"))?,
            params.get(&format!("{bn}.bias"))?,
            params.get(&format!("{bn}.running_mean"))?,
            params.get(&format!("{bn}.running_var"))?,
        ])
    }

    /// An eval-mode `BatchNormalization` of module `bn` (one that does not follow a convolution).
    pub fn batch_norm(&mut self, x: &str, params: &Params, bn: &str, eps: f64) -> Result<String, Error> {
        let ps = self.bn_params(params, bn)?;
        let names: Vec<String> =
            ps.into_iter().zip(["weight", "bias", "running_mean", "running_var"]).map(|(p, n)| self.initializer(&format!("{bn}.{n}"), p)).collect();
        let mut inputs = vec![x];
        inputs.extend(names.iter().map(String::as_str));
        Ok(self.node(bn, "BatchNormalization", &inputs, vec![attr_float("epsilon", eps as f32), attr_float("momentum", 0.9)]))
    }

    /// `Relu`.
    pub fn relu(&mut self, x: &str, scope: &str) -> String {
        self.node(scope, "Relu", &[x], vec![])
    }

    /// `Clip(x, lo, hi)` with scalar min/max initializers (ReLU6 is `clip(x, 0, 6)`).
    pub fn clip(&mut self, x: &str, scope: &str, lo: f32, hi: f32) -> String {
        let lo = self.initializer(&format!("{scope}.clip_min"), Param { shape: vec![], data: vec![lo] });
        let hi = self.initializer(&format!("{scope}.clip_max"), Param { shape: vec![], data: vec![hi] });
        self.node(scope, "Clip", &[x, &lo, &hi], vec![])
    }

    /// `MaxPool` with a square kernel, stride and symmetric padding (floor mode).
    pub fn max_pool(&mut self, x: &str, scope: &str, kernel: i64, stride: i64, pad: i64) -> String {
        let attrs = vec![
            attr_int("ceil_mode", 0),
            attr_ints("dilations", &[1, 1]),
            attr_ints("kernel_shape", &[kernel, kernel]),
            attr_ints("pads", &[pad; 4]),
            attr_ints("strides", &[stride, stride]),
        ];
        self.node(scope, "MaxPool", &[x], attrs)
    }

    /// `AveragePool` with a square kernel, stride and symmetric padding (floor mode, padding
    /// counted as PyTorch's default `count_include_pad=True`).
    pub fn avg_pool(&mut self, x: &str, scope: &str, kernel: i64, stride: i64, pad: i64) -> String {
        let attrs = vec![
            attr_int("ceil_mode", 0),
            attr_int("count_include_pad", 1),
            attr_ints("kernel_shape", &[kernel, kernel]),
            attr_ints("pads", &[pad; 4]),
            attr_ints("strides", &[stride, stride]),
        ];
        self.node(scope, "AveragePool", &[x], attrs)
    }

    /// `GlobalAveragePool` then `Flatten(axis 1)`: `adaptive_avg_pool2d(1)` + `flatten(1)`.
    pub fn global_avg_pool_flatten(&mut self, x: &str, scope: &str) -> String {
        let pooled = self.node(scope, "GlobalAveragePool", &[x], vec![]);
        self.node(scope, "Flatten", &[&pooled], vec![attr_int("axis", 1)])
    }

    /// PyTorch's `adaptive_avg_pool2d(x, [out, out])` then `flatten(1)` on a `[N, C, side, side]`
    /// map, as `torch.onnx.export` writes it where it can: `GlobalAveragePool` for `out = 1`,
    /// `AveragePool` with kernel and stride `side / out` when `out` divides `side`. Otherwise (an
    /// input smaller than the network's native size) the pooling is its exact linear map:
    /// `Reshape` to `[N, C, side²]`, `MatMul` by the `[side², out²]` matrix of PyTorch's bins
    /// (`floor(i·side/out) .. ceil((i+1)·side/out)`), then `Flatten`.
    pub fn adaptive_avg_pool_flatten(&mut self, x: &str, scope: &str, channels: i64, side: i64, out: i64) -> String {
        if out == 1 {
            return self.global_avg_pool_flatten(x, scope);
        }
        if side % out == 0 {
            let k = side / out;
            let pooled = self.avg_pool(x, scope, k, k, 0);
            return self.node(scope, "Flatten", &[&pooled], vec![attr_int("axis", 1)]);
        }
        let bins = |i: i64| (i * side / out, ((i + 1) * side + out - 1) / out);
        let mut m = vec![0f32; (side * side * out * out) as usize];
        for (oi, oj) in (0..out).flat_map(|i| (0..out).map(move |j| (i, j))) {
            let ((h0, h1), (w0, w1)) = (bins(oi), bins(oj));
            let weight = 1.0 / ((h1 - h0) * (w1 - w0)) as f32;
            for (h, w) in (h0..h1).flat_map(|h| (w0..w1).map(move |w| (h, w))) {
                m[((h * side + w) * out * out + oi * out + oj) as usize] = weight;
            }
        }
        let shape = self.initializer_i64(&format!("{scope}.shape"), vec![3], &[0, channels, side * side]);
        let matrix = self.initializer(&format!("{scope}.pool_matrix"), Param { shape: vec![side * side, out * out], data: m });
        let flat = self.node(scope, "Reshape", &[x, &shape], vec![]);
        let pooled = self.node(scope, "MatMul", &[&flat, &matrix], vec![]);
        self.node(scope, "Flatten", &[&pooled], vec![attr_int("axis", 1)])
    }

    /// `Gemm(x, W, b)` with `transB = 1`: PyTorch's `nn.Linear` of module `scope`.
    pub fn linear(&mut self, x: &str, params: &Params, scope: &str) -> Result<String, Error> {
        let w = self.initializer(&format!("{scope}.weight"), params.get(&format!("{scope}.weight"))?);
        let b = self.initializer(&format!("{scope}.bias"), params.get(&format!("{scope}.bias"))?);
        let attrs = vec![attr_float("alpha", 1.0), attr_float("beta", 1.0), attr_int("transB", 1)];
        Ok(self.node(scope, "Gemm", &[x, &w, &b], attrs))
    }

    /// `Concat` along `axis`.
    pub fn concat(&mut self, xs: &[&str], scope: &str, axis: i64) -> String {
        self.node(scope, "Concat", xs, vec![attr_int("axis", axis)])
    }

    /// Element-wise `Add`.
    pub fn add(&mut self, a: &str, b: &str, scope: &str) -> String {
        self.node(scope, "Add", &[a, b], vec![])
    }

    /// `Div` by a float scalar `d` (a calibration's temperature), held as an initializer.
    pub fn div_scalar(&mut self, x: &str, scope: &str, d: f32) -> String {
        let c = self.initializer(&format!("{scope}.divisor"), Param { shape: vec![], data: vec![d] });
        self.node(scope, "Div", &[x, &c], vec![])
    }

    /// Renames the graph value `from` (the output of the node that produces it) to `to`, e.g. to
    /// give the graph's output its public name.
    pub fn rename_output(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let node =
            self.nodes.iter_mut().find(|n| n.output.iter().any(|o| o == from)).ok_or_else(|| Error::Graph(format!("no node outputs {from:?}")))?;
        node.output = vec![to.to_string()];
        Ok(())
    }

    /// `Softmax` or `LogSoftmax` (`op`) along `axis`.
    pub fn softmax(&mut self, x: &str, scope: &str, op: &str, axis: i64) -> String {
        self.node(scope, op, &[x], vec![attr_int("axis", axis)])
    }
}
