//! A minimal, bounds-checked reader for the ZIP archives `torch.save` writes (PyTorch ≥ 1.6).
//!
//! Only what PyTorch produces is supported: stored (uncompressed) entries, optionally ZIP64.
//! Entries are returned as slices of the input, so no size read from the file is ever used to
//! allocate; CRC-32 of each entry can be verified.

use crate::pickle::{Fault, PResult};

/// One stored entry: name and the byte range of its data in the archive.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub start: usize,
    pub len: usize,
    pub crc32: u32,
}

fn corrupt<T>(msg: impl Into<String>) -> PResult<T> {
    Err(Fault::Corrupt(format!("zip: {}", msg.into())))
}

fn rd16(b: &[u8], at: usize) -> PResult<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_le_bytes([s[0], s[1]])),
        None => corrupt("truncated structure"),
    }
}
fn rd32(b: &[u8], at: usize) -> PResult<u32> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        None => corrupt("truncated structure"),
    }
}
fn rd64(b: &[u8], at: usize) -> PResult<u64> {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Ok(u64::from_le_bytes(a))
        }
        None => corrupt("truncated structure"),
    }
}
fn to_usize(x: u64) -> PResult<usize> {
    usize::try_from(x).or_else(|_| corrupt(format!("offset {x} does not fit in memory")))
}

/// True when `data` starts like a ZIP archive.
pub(crate) fn is_zip(data: &[u8]) -> bool {
    data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06")
}

/// Lists the entries of the archive from its central directory.
pub(crate) fn entries(data: &[u8]) -> PResult<Vec<Entry>> {
    // End of central directory: 22 bytes + comment (≤ 65535), searched from the end.
    const EOCD: u32 = 0x0605_4b50;
    if data.len() < 22 {
        return corrupt("file too short for a zip archive (truncated?)");
    }
    let min = data.len().saturating_sub(22 + 65_535);
    let mut eocd = None;
    let mut i = data.len() - 22;
    loop {
        if rd32(data, i)? == EOCD {
            eocd = Some(i);
            break;
        }
        if i == min {
            break;
        }
        i -= 1;
    }
    let Some(eocd) = eocd else {
        return corrupt("end-of-central-directory record not found (truncated archive?)");
    };
    let mut count = rd16(data, eocd + 10)? as u64;
    let mut cd_size = rd32(data, eocd + 12)? as u64;
    let mut cd_off = rd32(data, eocd + 16)? as u64;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_off == 0xffff_ffff {
        // ZIP64 end-of-central-directory locator sits right before the EOCD.
        let loc = eocd.checked_sub(20).ok_or_else(|| Fault::Corrupt("zip: missing ZIP64 locator".into()))?;
        if rd32(data, loc)? != 0x0706_4b50 {
            return corrupt("missing ZIP64 end-of-central-directory locator");
        }
        let z = to_usize(rd64(data, loc + 8)?)?;
        if rd32(data, z)? != 0x0606_4b50 {
            return corrupt("bad ZIP64 end-of-central-directory record");
        }
        count = rd64(data, z + 32)?;
        cd_size = rd64(data, z + 40)?;
        cd_off = rd64(data, z + 48)?;
    }
    let cd_off = to_usize(cd_off)?;
    let cd_end = cd_off.checked_add(to_usize(cd_size)?).filter(|&e| e <= data.len());
    if cd_end.is_none() {
        return corrupt("central directory lies outside the file (truncated archive?)");
    }
    // Each central record is at least 46 bytes: bound the count before allocating.
    if count > (cd_size / 46) + 1 {
        return corrupt(format!("declares {count} entries in a {cd_size}-byte central directory"));
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut p = cd_off;
    for _ in 0..count {
        if rd32(data, p)? != 0x0201_4b50 {
            return corrupt(format!("bad central directory record at offset {p}"));
        }
        let method = rd16(data, p + 10)?;
        let crc32 = rd32(data, p + 16)?;
        let mut csize = rd32(data, p + 20)? as u64;
        let mut usize_ = rd32(data, p + 24)? as u64;
        let name_len = rd16(data, p + 28)? as usize;
        let extra_len = rd16(data, p + 30)? as usize;
        let comment_len = rd16(data, p + 32)? as usize;
        let mut local = rd32(data, p + 42)? as u64;
        let name_bytes = data.get(p + 46..p + 46 + name_len).ok_or_else(|| Fault::Corrupt("zip: truncated entry name".into()))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = data.get(p + 46 + name_len..p + 46 + name_len + extra_len).ok_or_else(|| Fault::Corrupt("zip: truncated extra field".into()))?;
        // ZIP64 extended information: present fields in order usize, csize, local offset.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = rd16(extra, e)?;
            let sz = rd16(extra, e + 2)? as usize;
            if id == 0x0001 {
                let mut q = e + 4;
                if usize_ == 0xffff_ffff {
                    usize_ = rd64(extra, q)?;
                    q += 8;
                }
                if csize == 0xffff_ffff {
                    csize = rd64(extra, q)?;
                    q += 8;
                }
                if local == 0xffff_ffff {
                    local = rd64(extra, q)?;
                }
            }
            e += 4 + sz;
        }
        if method != 0 {
            return Err(Fault::Unsupported(format!("zip entry {name:?} is compressed (method {method}); PyTorch writes stored entries only")));
        }
        if csize != usize_ {
            return corrupt(format!("stored entry {name:?} has different compressed and plain sizes"));
        }
        let l = to_usize(local)?;
        if rd32(data, l)? != 0x0403_4b50 {
            return corrupt(format!("bad local header for entry {name:?}"));
        }
        let lname = rd16(data, l + 26)? as usize;
        let lextra = rd16(data, l + 28)? as usize;
        let start = l + 30 + lname + lextra;
        let len = to_usize(csize)?;
        if start.checked_add(len).is_none_or(|end| end > data.len()) {
            return corrupt(format!("entry {name:?} extends past the end of the file (truncated?)"));
        }
        out.push(Entry { name, start, len, crc32 });
        p += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// Verifies an entry's CRC-32.
pub(crate) fn check_crc(data: &[u8], e: &Entry) -> PResult<()> {
    let got = crc32fast::hash(&data[e.start..e.start + e.len]);
    if got != e.crc32 {
        return corrupt(format!("CRC-32 mismatch in entry {:?} (stored {:08x}, computed {got:08x}): damaged file", e.name, e.crc32));
    }
    Ok(())
}
