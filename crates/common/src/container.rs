//! The one container format of petal's binary cache files: the image cache (`PETALIMG`), the
//! chunks of resumable work (`PETALCHK`) and the activation cache (`PETALACT`) are each a *kind*
//! of container. The container owns the magic, the version, the lengths and the checksums; a kind
//! owns only what its body and its meta block mean.
//!
//! # Layout (little-endian)
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 8 | the kind's magic |
//! | 8 | 4 | the kind's format version |
//! | 12 | 4 | flags: bit 0 set when the body checksum covers the whole body |
//! | 16 | 8 | body length `B` |
//! | 24 | 8 | meta length `M` |
//! | 32 | 4 | CRC-32 of the body (0 when bit 0 is clear: the kind checks its records itself) |
//! | 36 | 4 | CRC-32 of the meta block |
//! | 40 | 20 | reserved (zero) |
//! | 60 | 4 | CRC-32 of bytes 0..60 |
//! | 64 | `B` | body (64-byte aligned in the file, so memory-mapped rows are aligned) |
//! | 64 + `B` | `M` | meta block |
//!
//! The file is exactly `64 + B + M` bytes. The meta block comes last so that a writer streams the
//! body first (gigabytes of pixels or activations) and patches the preamble at the end
//! ([`Writer`]). Readers check, in this order: the length of the preamble, the magic, the version
//! (an older version may lay out its header differently, so it is reported as such, not as
//! damage), the preamble's checksum, the lengths, the meta block's checksum and, when the kind asks
//! for it, the body's.

use std::io::{Seek, SeekFrom, Write};

/// Bytes before the body.
pub const PREAMBLE: usize = 64;
const FLAG_BODY_CRC: u32 = 1;

/// What a kind of container is: its magic, its current version and how its body is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The first 8 bytes of every file of this kind.
    pub magic: [u8; 8],
    /// The format version this build writes and reads (bump it when the bytes change meaning).
    pub version: u32,
    /// What the kind is called in messages ("image cache").
    pub name: &'static str,
    /// Whether one CRC-32 covers the whole body. Kinds whose bodies are too large to read at
    /// every open (the image cache) check their records themselves instead.
    pub body_crc: bool,
}

/// Why bytes are not a usable container of a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    /// Shorter than the preamble or than its lengths say.
    #[error("truncated (torn or cut short): {len} bytes, {expected}")]
    Truncated {
        /// The bytes there are.
        len: u64,
        /// What the header promised, in words.
        expected: String,
    },
    /// Another kind of file altogether.
    #[error("not a petal {name} (bad magic)")]
    NotThisKind {
        /// The kind expected.
        name: &'static str,
    },
    /// A file of this kind written by another version of petal: expected after an upgrade.
    #[error("format version {found}, this build writes {expected}")]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// A checksum failed: the named part of the file is damaged.
    #[error("damaged: the {part} fails its checksum")]
    Checksum {
        /// "header", "meta block" or "body".
        part: &'static str,
    },
}

impl ContainerError {
    /// Whether the file is damaged (worth a warning), rather than of another version (expected
    /// after an upgrade).
    pub fn is_damage(&self) -> bool {
        !matches!(self, ContainerError::Version { .. })
    }
}

/// The parts of a container, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The body: what the kind stores (pixels, rows, a payload).
    pub body: &'a [u8],
    /// The meta block: what the kind says about its body.
    pub meta: &'a [u8],
}

/// Checks `bytes` as a container of `kind` and returns its body and meta block.
pub fn open<'a>(bytes: &'a [u8], kind: &Kind) -> Result<Parts<'a>, ContainerError> {
    let len = bytes.len() as u64;
    if bytes.get(..8) != Some(&kind.magic[..]) {
        return Err(ContainerError::NotThisKind { name: kind.name });
    }
    let mut head = le::Reader::new(&bytes[8..]);
    let short = || ContainerError::Truncated { len, expected: format!("the header alone is {PREAMBLE}") };
    let version = head.u32().ok_or_else(short)?;
    if version != kind.version {
        return Err(ContainerError::Version { found: version, expected: kind.version });
    }
    if bytes.len() < PREAMBLE {
        return Err(short());
    }
    if crc32(&bytes[..60]) != le::u32_at(bytes, 60).unwrap_or_default() {
        return Err(ContainerError::Checksum { part: "header" });
    }
    let flags = head.u32().unwrap_or_default();
    let (body_len, meta_len) = (head.u64().unwrap_or_default(), head.u64().unwrap_or_default());
    let (body_crc, meta_crc) = (head.u32().unwrap_or_default(), head.u32().unwrap_or_default());
    let expected = body_len.checked_add(meta_len).and_then(|n| n.checked_add(PREAMBLE as u64));
    if expected != Some(len) {
        let expected = match expected {
            Some(e) => format!("its header says {e}"),
            None => "its header's lengths overflow".into(),
        };
        return Err(ContainerError::Truncated { len, expected });
    }
    let body_end = PREAMBLE + body_len as usize;
    let (body, meta) = (&bytes[PREAMBLE..body_end], &bytes[body_end..]);
    if crc32(meta) != meta_crc {
        return Err(ContainerError::Checksum { part: "meta block" });
    }
    if kind.body_crc && (flags & FLAG_BODY_CRC == 0 || crc32(body) != body_crc) {
        return Err(ContainerError::Checksum { part: "body" });
    }
    Ok(Parts { body, meta })
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn preamble(kind: &Kind, body_len: u64, body_crc: u32, meta: &[u8]) -> [u8; PREAMBLE] {
    let mut p = [0u8; PREAMBLE];
    p[..8].copy_from_slice(&kind.magic);
    p[8..12].copy_from_slice(&kind.version.to_le_bytes());
    p[12..16].copy_from_slice(&(if kind.body_crc { FLAG_BODY_CRC } else { 0 }).to_le_bytes());
    p[16..24].copy_from_slice(&body_len.to_le_bytes());
    p[24..32].copy_from_slice(&(meta.len() as u64).to_le_bytes());
    p[32..36].copy_from_slice(&(if kind.body_crc { body_crc } else { 0 }).to_le_bytes());
    p[36..40].copy_from_slice(&crc32(meta).to_le_bytes());
    let head_crc = crc32(&p[..60]);
    p[60..64].copy_from_slice(&head_crc.to_le_bytes());
    p
}

/// A whole container in memory: for small files written in one go (chunks).
pub fn to_vec(kind: &Kind, body: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREAMBLE + body.len() + meta.len());
    out.extend_from_slice(&preamble(kind, body.len() as u64, crc32(body), meta));
    out.extend_from_slice(body);
    out.extend_from_slice(meta);
    out
}

/// Streams a container to a file: the body first, then the meta block, then the preamble over
/// the zeros it left at the start. The caller makes the file atomic (a temp file renamed once
/// [`Writer::finish`] returned).
#[derive(Debug)]
pub struct Writer<W: Write + Seek> {
    out: W,
    kind: Kind,
    body_len: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a container of `kind` at the current position of `out` (the start of a file).
    pub fn new(mut out: W, kind: Kind) -> std::io::Result<Self> {
        out.write_all(&[0u8; PREAMBLE])?;
        Ok(Writer { out, kind, body_len: 0, crc: crc32fast::Hasher::new() })
    }

    /// Bytes of body written so far: the body offset of the next byte.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Appends `bytes` to the body.
    pub fn write_body(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.body_len += bytes.len() as u64;
        Ok(())
    }

    /// Pads the body with zeros so that its next byte starts on a multiple of `align` (in the
    /// file, whose body starts 64-byte aligned).
    pub fn align(&mut self, align: u64) -> std::io::Result<()> {
        let pad = (align - self.body_len % align) % align;
        self.write_body(&vec![0u8; pad as usize])
    }

    /// Writes the meta block, then the preamble, flushes, and returns the output (positioned at
    /// its end). Sync it before renaming it into place.
    pub fn finish(mut self, meta: &[u8]) -> std::io::Result<W> {
        self.out.write_all(meta)?;
        let p = preamble(&self.kind, self.body_len, self.crc.clone().finalize(), meta);
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&p)?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Little-endian reads that never panic: the one reader of every binary field in petal's files.
pub mod le {
    /// The `u32` at byte `at`, if there are 4 bytes there.
    pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
    }

    /// The `u64` at byte `at`, if there are 8 bytes there.
    pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
    }

    /// Reads fields one after another; every read is `None` past the end.
    #[derive(Debug, Clone)]
    pub struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        /// A reader at the start of `bytes`.
        pub fn new(bytes: &'a [u8]) -> Self {
            Reader { bytes, at: 0 }
        }

        /// The next `n` bytes.
        pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
            let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
            self.at += n;
            Some(out)
        }

        /// The next `u32`.
        pub fn u32(&mut self) -> Option<u32> {
            self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }

        /// The next `u64`.
        pub fn u64(&mut self) -> Option<u64> {
            self.bytes(8).and_then(|b| Some(u64::from_le_bytes(b.try_into().ok()?)))
        }

        /// The next `i64`.
        pub fn i64(&mut self) -> Option<i64> {
            self.u64().map(|v| v as i64)
        }

        /// What is left.
        pub fn rest(&self) -> &'a [u8] {
            &self.bytes[self.at.min(self.bytes.len())..]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: Kind = Kind { magic: *b"PETALTST", version: 3, name: "test file", body_crc: true };
    const RECORDS: Kind = Kind { body_crc: false, ..KIND };

    fn streamed(kind: Kind, body: &[&[u8]], meta: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(std::io::Cursor::new(Vec::new()), kind).unwrap();
        for part in body {
            w.write_body(part).unwrap();
        }
        w.finish(meta).unwrap().into_inner()
    }

    #[test]
    fn written_in_one_go_or_streamed_the_bytes_are_the_same_and_read_back() {
        let whole = to_vec(&KIND, b"hello body", b"{\"m\":1}");
        assert_eq!(whole, streamed(KIND, &[b"hello", b" body"], b"{\"m\":1}"));
        assert_eq!(whole.len(), PREAMBLE + 10 + 7);
        let p = open(&whole, &KIND).unwrap();
        assert_eq!((p.body, p.meta), (&b"hello body"[..], &b"{\"m\":1}"[..]));
        // Empty body and meta are fine too.
        let empty = to_vec(&KIND, b"", b"");
        let p = open(&empty, &KIND).unwrap();
        assert!(p.body.is_empty() && p.meta.is_empty());
    }

    #[test]
    fn alignment_pads_the_body_with_zeros() {
        let mut w = Writer::new(std::io::Cursor::new(Vec::new()), KIND).unwrap();
        w.write_body(b"abc").unwrap();
        w.align(64).unwrap();
        assert_eq!(w.body_len(), 64);
        w.align(64).unwrap();
        assert_eq!(w.body_len(), 64, "already aligned: nothing added");
        w.write_body(b"d").unwrap();
        let bytes = w.finish(b"").unwrap().into_inner();
        let p = open(&bytes, &KIND).unwrap();
        assert_eq!(&p.body[..3], b"abc");
        assert!(p.body[3..64].iter().all(|&b| b == 0));
        assert_eq!(p.body[64], b'd');
        assert_eq!((PREAMBLE + 64) % 64, 0, "the aligned record is aligned in the file");
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let good = to_vec(&KIND, b"0123456789", b"meta");
        let err = |b: &[u8]| open(b, &KIND).unwrap_err();
        assert_eq!(err(b"garbage, not ours at all"), ContainerError::NotThisKind { name: "test file" });
        assert!(err(b"garbage").to_string().contains("bad magic"));
        // Another version: not damage, and reported before any checksum.
        let mut old = good.clone();
        old[8] = 1;
        assert_eq!(err(&old), ContainerError::Version { found: 1, expected: 3 });
        assert!(!err(&old).is_damage());
        // Cut short anywhere.
        for cut in [10, 63, PREAMBLE + 5, good.len() - 1] {
            let e = err(&good[..cut]);
            assert!(matches!(e, ContainerError::Truncated { .. }) && e.is_damage(), "cut at {cut}: {e}");
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(err(&longer), ContainerError::Truncated { .. }));
        // A flipped bit in each part.
        for (at, part) in [(20, "header"), (PREAMBLE + 3, "body"), (good.len() - 2, "meta block")] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert_eq!(err(&bad), ContainerError::Checksum { part }, "flip at {at}");
            assert!(err(&bad).to_string().contains("checksum"));
        }
        // Lengths that overflow are refused, not wrapped.
        let mut huge = good.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let c = crc32(&huge[..60]);
        huge[60..64].copy_from_slice(&c.to_le_bytes());
        assert!(err(&huge).to_string().contains("overflow"));
    }

    #[test]
    fn a_kind_that_checks_its_own_records_skips_the_body_checksum() {
        let mut bytes = to_vec(&RECORDS, b"records", b"m");
        assert_eq!(le::u32_at(&bytes, 32), Some(0));
        bytes[PREAMBLE] ^= 1;
        assert_eq!(open(&bytes, &RECORDS).unwrap().body, b"secords");
        // The same bytes read as the checked kind fail: the flag says the body was never summed.
        assert_eq!(open(&bytes, &KIND).unwrap_err(), ContainerError::Checksum { part: "body" });
    }

    #[test]
    fn little_endian_reads_stop_at_the_end() {
        let b = [1u8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xff];
        assert_eq!(le::u32_at(&b, 0), Some(1));
        assert_eq!(le::u64_at(&b, 4), Some(2));
        assert_eq!(le::u64_at(&b, 6), None);
        assert_eq!(le::u32_at(&b, usize::MAX - 1), None);
        let mut r = le::Reader::new(&b);
        assert_eq!((r.u32(), r.u64()), (Some(1), Some(2)));
        assert_eq!(r.rest(), &[0xff]);
        assert_eq!(r.u32(), None);
        assert_eq!(r.bytes(1), Some(&[0xff][..]));
        assert_eq!(r.bytes(1), None);
        assert_eq!(le::Reader::new(&(-5i64).to_le_bytes()).i64(), Some(-5));
    }
}
