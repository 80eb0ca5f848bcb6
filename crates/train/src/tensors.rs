//! Conversion between tch tensors and the checkpoint crate's plain tensor data (the model crate's
//! conversions, with this crate's error type).

use checkpoint::TensorData;
use tch::Tensor;

use crate::Error;

/// Copies a tensor (any device, any layout) into contiguous little-endian bytes.
pub fn to_data(name: &str, t: &Tensor) -> Result<TensorData, Error> {
    Ok(model::weights::from_tensor(t, name)?)
}

/// Builds a CPU tensor from tensor data.
pub fn from_data(name: &str, d: &TensorData) -> Result<Tensor, Error> {
    Ok(model::weights::to_tensor(d, name, std::path::Path::new(name))?)
}

/// Loads every model tensor of checkpoint `c` (read from `path`, named in errors) into `vs`;
/// returns how many were loaded.
pub fn load_model_tensors(vs: &tch::nn::VarStore, c: &checkpoint::Checkpoint, path: &std::path::Path) -> Result<usize, Error> {
    let tensors: Vec<(String, Tensor)> = c.model_tensors().map(|(k, d)| from_data(k, d).map(|t| (k.clone(), t))).collect::<Result<_, _>>()?;
    Ok(model::weights::load_all_tensors(vs, tensors, path)?)
}
