//! Element types and tensor bytes (owned, or borrowed from a shared read-only buffer such as a
//! memory-mapped file).

use std::sync::Arc;

use crate::Error;
use serde::{Deserialize, Serialize};

/// Element type of a tensor. Names (also in serde) follow safetensors ("F32", "BF16", "BOOL").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (upper half of a binary32).
    BF16,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean stored as one byte (0 or 1).
    #[serde(rename = "BOOL")]
    Bool,
}

impl DType {
    /// Every supported dtype.
    pub const ALL: [DType; 10] =
        [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::Bool];

    /// The safetensors name of the dtype ("F32", "BOOL", ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Parses a safetensors dtype name.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        use safetensors::Dtype as S;
        match self {
            DType::F32 => S::F32,
            DType::F64 => S::F64,
            DType::F16 => S::F16,
            DType::BF16 => S::BF16,
            DType::I64 => S::I64,
            DType::I32 => S::I32,
            DType::I16 => S::I16,
            DType::I8 => S::I8,
            DType::U8 => S::U8,
            DType::Bool => S::BOOL,
        }
    }

    pub(crate) fn from_safetensors(d: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match d {
            S::F32 => DType::F32,
            S::F64 => DType::F64,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I64 => DType::I64,
            S::I32 => DType::I32,
            S::I16 => DType::I16,
            S::I8 => DType::I8,
            S::U8 => DType::U8,
            S::BOOL => DType::Bool,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A read-only buffer that tensors can borrow from: the memory map of a file being imported.
pub(crate) type SharedBuf = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The bytes of one tensor: owned, or a range of a shared read-only buffer (a memory-mapped
/// file), so that importing a large file does not copy its tensors. Cloning a shared range is
/// cheap; [`Bytes::to_mut`] copies it out first. Dereferences to `[u8]`.
#[derive(Clone, Default)]
pub struct Bytes(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    Shared { buf: SharedBuf, start: usize, len: usize },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Owned(Vec::new())
    }
}

impl Bytes {
    /// `len` bytes of `buf` from `start`; the caller has checked the range.
    pub(crate) fn shared(buf: &SharedBuf, start: usize, len: usize) -> Self {
        debug_assert!(start + len <= (**buf).as_ref().len());
        Bytes(Repr::Shared { buf: Arc::clone(buf), start, len })
    }

    /// The bytes as an owned vector that may be changed (a shared range is copied first).
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        if let Repr::Shared { .. } = self.0 {
            self.0 = Repr::Owned(self.to_vec());
        }
        match &mut self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { .. } => unreachable!("converted to owned above"),
        }
    }

    /// True when the bytes are borrowed from a shared buffer (not copied).
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { buf, start, len } => &(**buf).as_ref()[*start..*start + *len],
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Repr::Owned(v))
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Bytes {}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes{})", self.len(), if self.is_shared() { ", shared" } else { "" })
    }
}

/// Where a reader's bytes live: the input slice, and the shared buffer it is part of (when the
/// input is a memory-mapped file), so tensors can borrow instead of copy.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    /// The whole input.
    pub data: &'a [u8],
    /// The shared buffer `data` is, when there is one.
    pub shared: Option<&'a SharedBuf>,
}

impl<'a> Source<'a> {
    /// A source without a shared buffer: tensors are copied out.
    pub fn plain(data: &'a [u8]) -> Self {
        Source { data, shared: None }
    }

    /// Tensor bytes for `part`, a sub-slice of `data`: borrowed when there is a shared buffer.
    pub fn bytes(&self, part: &[u8]) -> Bytes {
        let base = self.data.as_ptr() as usize;
        let at = part.as_ptr() as usize;
        match self.shared {
            Some(buf) if at >= base && at + part.len() <= base + self.data.len() => Bytes::shared(buf, at - base, part.len()),
            _ => Bytes::from(part.to_vec()),
        }
    }
}

/// Contiguous, row-major, little-endian tensor bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorData {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a scalar.
    pub shape: Vec<usize>,
    /// `numel() * dtype.size_in_bytes()` bytes, little-endian, row-major.
    pub bytes: Bytes,
}

impl TensorData {
    /// Builds a tensor, checking that `bytes` has exactly the length `shape` and `dtype` imply.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self, Error> {
        let t = TensorData { dtype, shape, bytes: bytes.into() };
        t.check()?;
        Ok(t)
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that the byte length matches shape and dtype.
    pub fn check(&self) -> Result<(), Error> {
        let expected = self.shape.iter().try_fold(self.dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
        match expected {
            Some(n) if n == self.bytes.len() => Ok(()),
            Some(n) => Err(Error::Tensor(format!("{} tensor of shape {:?} needs {n} bytes but has {}", self.dtype, self.shape, self.bytes.len()))),
            None => Err(Error::Tensor(format!("shape {:?} overflows", self.shape))),
        }
    }

    /// A new F32 tensor holding `v` (which must have `shape`'s product many values; this is the
    /// caller's contract and is checked with a debug assertion only).
    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), v.len());
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        TensorData { dtype: DType::F32, shape, bytes: bytes.into() }
    }

    /// The values converted to f32 (floats are rounded to nearest, integers converted, bool as
    /// 0/1).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>, Error> {
        self.check()?;
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect(),
            DType::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f32).collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as f32).collect(),
            DType::U8 => b.iter().map(|&x| x as f32).collect(),
            DType::Bool => b.iter().map(|&x| if x != 0 { 1.0 } else { 0.0 }).collect(),
        })
    }

    /// The values as i64, for integer and bool tensors (e.g. BatchNorm's `num_batches_tracked`).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, Error> {
        self.check()?;
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            DType::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as i64).collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as i64).collect(),
            d => return Err(Error::Tensor(format!("to_i64_vec: {d} is not an integer dtype"))),
        })
    }
}

/// Tensors by name, in name order.
pub type TensorMap = std::collections::BTreeMap<String, TensorData>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sizes_and_serde_agree() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
            assert_eq!(serde_json::to_value(d).unwrap(), serde_json::json!(d.name()));
            assert_eq!(DType::from_safetensors(d.to_safetensors()), Some(d));
            assert_eq!(d.to_safetensors().bitsize(), d.size_in_bytes() * 8);
        }
    }

    #[test]
    fn conversions() {
        let t = TensorData::from_f32(vec![2, 2], &[1.0, -2.5, 0.0, 3.25]);
        assert_eq!(t.numel(), 4);
        assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, -2.5, 0.0, 3.25]);
        // bf16 0x3fc0 = 1.5, f16 0x3e00 = 1.5, f16 0xfbff = -65504
        let b = TensorData::new(DType::BF16, vec![1], vec![0xc0, 0x3f]).unwrap();
        assert_eq!(b.to_f32_vec().unwrap(), vec![1.5]);
        let h = TensorData::new(DType::F16, vec![2], vec![0x00, 0x3e, 0xff, 0xfb]).unwrap();
        assert_eq!(h.to_f32_vec().unwrap(), vec![1.5, -65504.0]);
        let i = TensorData::new(DType::I64, vec![], (-3i64).to_le_bytes().to_vec()).unwrap();
        assert_eq!(i.to_f32_vec().unwrap(), vec![-3.0]);
        assert_eq!(i.to_i64_vec().unwrap(), vec![-3]);
        assert!(TensorData::new(DType::F32, vec![3], vec![0; 11]).is_err());
        assert!(TensorData::new(DType::F32, vec![usize::MAX, 3], vec![]).is_err());
        assert!(t.to_i64_vec().is_err());
    }
}
