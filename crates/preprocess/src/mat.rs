//! A minimal reader for MATLAB v5 `.mat` files: enough for the Oxford 102 metadata
//! (`imagelabels.mat`, `setid.mat`), i.e. real numeric matrices, optionally zlib-compressed
//! (`miCOMPRESSED`), stored in any numeric MATLAB data type. Cell arrays, structs, sparse,
//! complex and character arrays are skipped.
//!
//! Format reference: "MAT-File Format", MathWorks (version 5): a 128-byte header (text,
//! subsystem offset, version 0x0100, endian indicator "IM"/"MI"), then data elements, each a
//! tag (type, byte count) or a "small data element" (type and count packed in 4 bytes),
//! padded to 8 bytes.

use crate::error::Error;
use flate2::read::ZlibDecoder;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Largest accepted file and decompressed element, so that sizes read from a file cannot make
/// us allocate without bound.
const MAX_BYTES: u64 = 256 << 20;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// A real numeric MATLAB array, values converted to f64, in MATLAB's column-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// Dimensions (at least 2, MATLAB style).
    pub dims: Vec<usize>,
    /// Values in column-major order; `len() == dims.iter().product()`.
    pub data: Vec<f64>,
}

/// Reads every real numeric array of a MATLAB v5 file, by variable name.
pub fn read_mat(path: &Path) -> Result<BTreeMap<String, MatArray>, Error> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_BYTES {
        return Err(mat_err(path, format!("file is {} bytes, more than the {} accepted", meta.len(), MAX_BYTES)));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_mat(&bytes).map_err(|p| mat_err(path, p))
}

fn mat_err(path: &Path, problem: String) -> Error {
    Error::Mat { path: path.to_path_buf(), problem }
}

/// Parses a MATLAB v5 file held in memory. Errors are plain messages (the caller adds the path).
pub fn parse_mat(bytes: &[u8]) -> Result<BTreeMap<String, MatArray>, String> {
    if bytes.len() < 128 {
        return Err(format!("{} bytes, shorter than the 128-byte MAT header", bytes.len()));
    }
    if bytes.starts_with(b"MATLAB 7.3") || bytes.starts_with(b"\x89HDF") {
        return Err("MATLAB v7.3 (HDF5) files are not supported; save with -v7 or -v6".into());
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => return Err(format!("bad endian indicator {other:?} (not a MATLAB v5 file)")),
    };
    let rd = Rd { big };
    let version = rd.u16(&bytes[124..126]);
    if version != 0x0100 {
        return Err(format!("unsupported MAT version 0x{version:04x}"));
    }
    let mut out = BTreeMap::new();
    let mut pos = 128usize;
    while pos + 8 <= bytes.len() {
        let (ty, data, next) = rd.element(bytes, pos)?;
        match ty {
            MI_MATRIX => {
                if let Some((name, arr)) = rd.matrix(data)? {
                    out.insert(name, arr);
                }
            }
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                ZlibDecoder::new(data)
                    .take(MAX_BYTES + 1)
                    .read_to_end(&mut inflated)
                    .map_err(|e| format!("corrupt compressed element at byte {pos}: {e}"))?;
                if inflated.len() as u64 > MAX_BYTES {
                    return Err(format!("compressed element at byte {pos} inflates beyond {MAX_BYTES} bytes"));
                }
                if inflated.len() >= 8 {
                    let (ity, idata, _) = rd.element(&inflated, 0)?;
                    if ity == MI_MATRIX {
                        if let Some((name, arr)) = rd.matrix(idata)? {
                            out.insert(name, arr);
                        }
                    }
                }
            }
            _ => {}
        }
        // Compressed elements are not padded; all others are padded to 8 bytes.
        pos = next;
    }
    Ok(out)
}

struct Rd {
    big: bool,
}

impl Rd {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    /// Reads the element at `pos`: (type, payload, position of the next element).
    fn element<'a>(&self, buf: &'a [u8], pos: usize) -> Result<(u32, &'a [u8], usize), String> {
        let head = buf.get(pos..pos + 8).ok_or_else(|| format!("element tag at byte {pos} is cut off"))?;
        let first = self.u32(&head[0..4]);
        if first >> 16 != 0 {
            // Small data element: 2 bytes count, 2 bytes type, 4 bytes data.
            // In both byte orders the count ends up in the high half.
            let (n, ty) = (first >> 16, first & 0xffff);
            if n > 4 {
                return Err(format!("small data element at byte {pos} claims {n} bytes"));
            }
            return Ok((ty, &buf[pos + 4..pos + 4 + n as usize], pos + 8));
        }
        let ty = first;
        let n = self.u32(&head[4..8]) as usize;
        let start = pos + 8;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| format!("element at byte {pos} declares {n} bytes but only {} remain (truncated file?)", buf.len() - start))?;
        let next = if ty == MI_COMPRESSED { end } else { start + n.div_ceil(8) * 8 };
        Ok((ty, &buf[start..end], next.min(buf.len()).max(end)))
    }

    /// Parses an miMATRIX payload; returns None for arrays this reader skips.
    fn matrix(&self, data: &[u8]) -> Result<Option<(String, MatArray)>, String> {
        if data.is_empty() {
            return Ok(None);
        }
        let (fty, flags, p) = self.element(data, 0)?;
        if fty != MI_UINT32 || flags.len() < 8 {
            return Err("array flags sub-element is missing".into());
        }
        let class = self.u32(&flags[0..4]) & 0xff;
        let complex = self.u32(&flags[0..4]) & 0x0800 != 0;
        let (dty, dimb, p) = self.element(data, p)?;
        if dty != MI_INT32 || dimb.len() % 4 != 0 || dimb.len() < 8 {
            return Err("dimensions sub-element is missing or malformed".into());
        }
        let mut dims = Vec::with_capacity(dimb.len() / 4);
        for c in dimb.chunks_exact(4) {
            let d = self.u32(c) as i32;
            if d < 0 {
                return Err(format!("negative dimension {d}"));
            }
            dims.push(d as usize);
        }
        let (nty, nameb, p) = self.element(data, p)?;
        if nty != MI_INT8 && nty != MI_UINT8 && nty != 16 {
            return Err("array name sub-element is missing".into());
        }
        let name = String::from_utf8_lossy(nameb).into_owned();
        // Numeric classes: mxDOUBLE 6, mxSINGLE 7, mxINT8..mxUINT64 8..15. Others are skipped.
        if !(6..=15).contains(&class) || complex {
            return Ok(None);
        }
        let count = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("dimension product overflows")?;
        let (rty, real, _) = self.element(data, p)?;
        let width = match rty {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            other => return Err(format!("array '{name}': unsupported data type {other}")),
        };
        if real.len() != count * width {
            return Err(format!("array '{name}': {} bytes of data for {count} values of {width} bytes", real.len()));
        }
        let mut values = Vec::with_capacity(count);
        for c in real.chunks_exact(width) {
            let v = match rty {
                MI_INT8 => c[0] as i8 as f64,
                MI_UINT8 => c[0] as f64,
                MI_INT16 => self.u16(c) as i16 as f64,
                MI_UINT16 => self.u16(c) as f64,
                MI_INT32 => self.u32(c) as i32 as f64,
                MI_UINT32 => self.u32(c) as f64,
                MI_SINGLE => f32::from_bits(self.u32(c)) as f64,
                _ => {
                    let a: [u8; 8] = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                    let bits = if self.big { u64::from_be_bytes(a) } else { u64::from_le_bytes(a) };
                    match rty {
                        MI_DOUBLE => f64::from_bits(bits),
                        MI_INT64 => bits as i64 as f64,
                        _ => bits as f64,
                    }
                }
            };
            values.push(v);
        }
        Ok(Some((name, MatArray { dims, data: values })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_non_mat() {
        assert!(parse_mat(b"hello").unwrap_err().contains("128-byte"));
        let mut b = vec![b' '; 128];
        b[126] = b'X';
        assert!(parse_mat(&b).unwrap_err().contains("endian"));
    }

    #[test]
    fn truncated_element_is_an_error_not_a_panic() {
        let mut b = vec![b' '; 128];
        b[124] = 0;
        b[125] = 1;
        b[126] = b'I';
        b[127] = b'M';
        b.extend_from_slice(&14u32.to_le_bytes());
        b.extend_from_slice(&1000u32.to_le_bytes());
        b.extend_from_slice(&[0; 16]);
        assert!(parse_mat(&b).unwrap_err().contains("truncated"));
    }
}
