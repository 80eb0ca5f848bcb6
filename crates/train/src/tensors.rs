//! Conversion between tch tensors and the checkpoint crate's plain tensor data.

use checkpoint::{DType, TensorData};
use tch::{Kind, Tensor};

use crate::Error;

fn kind_of(d: DType) -> Option<Kind> {
    Some(match d {
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    })
}

fn dtype_of(k: Kind) -> Option<DType> {
    Some(match k {
        Kind::Float => DType::F32,
        Kind::Double => DType::F64,
        Kind::Half => DType::F16,
        Kind::BFloat16 => DType::BF16,
        Kind::Int64 => DType::I64,
        Kind::Int => DType::I32,
        Kind::Int16 => DType::I16,
        Kind::Int8 => DType::I8,
        Kind::Uint8 => DType::U8,
        Kind::Bool => DType::Bool,
        _ => return None,
    })
}

/// Copies a tensor (any device, any layout) into contiguous little-endian bytes.
pub fn to_data(name: &str, t: &Tensor) -> Result<TensorData, Error> {
    let kind = t.kind();
    let dtype = dtype_of(kind).ok_or_else(|| Error::Config(format!("tensor {name} has unsupported kind {kind:?}")))?;
    let t = t.detach().to_device(tch::Device::Cpu).contiguous();
    let numel = t.numel();
    let mut bytes = vec![0u8; numel * dtype.size_in_bytes()];
    t.f_copy_data_u8(&mut bytes, numel).map_err(|e| Error::Torch(format!("reading {name}: {e}")))?;
    Ok(TensorData { dtype, shape: t.size().iter().map(|&s| s as usize).collect(), bytes })
}

/// Builds a CPU tensor from tensor data.
pub fn from_data(name: &str, d: &TensorData) -> Result<Tensor, Error> {
    let kind = kind_of(d.dtype).ok_or_else(|| Error::Config(format!("tensor {name}: unsupported dtype")))?;
    let shape: Vec<i64> = d.shape.iter().map(|&s| s as i64).collect();
    Tensor::f_from_data_size(&d.bytes, &shape, kind).map_err(|e| Error::Torch(format!("building {name}: {e}")))
}
