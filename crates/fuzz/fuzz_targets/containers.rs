//! The cache files petal reads back, all one container format (`petal_common::container`): the
//! image cache (`ImageCache::open`, `verify`, every entry), a chunk of resumable work
//! (`ChunkStore::load`) and an activation cache (`ActivationCache::open`, every row) must read a
//! file or say why not: never panic, never read out of bounds.
//!
//! The first input byte picks the reader and whether the rest is the file as it is (which mostly
//! tests the container's own checks: a random file rarely passes a CRC-32) or the body and meta
//! block of a container of that kind with correct checksums (the second and third bytes say where
//! the body ends): so the kinds' own parsing of their meta blocks and bodies is reached too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use petal_common::container::{self, le, Kind};

fn dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("petal-fuzz-containers").tempdir_in(std::env::temp_dir()).expect("temp dir")).path()
}

const IMAGES: Kind = Kind { magic: *b"PETALIMG", version: preprocess::CACHE_VERSION, name: "image cache", body_crc: false };
const CHUNK: Kind = Kind { magic: *b"PETALCHK", version: checkpoint::chunks::CHUNK_FORMAT_VERSION, name: "chunk file", body_crc: true };
const ROWS: Kind =
    Kind { magic: *b"PETALACT", version: train::activations::ACTIVATION_CACHE_VERSION, name: "activation cache", body_crc: true };

/// The file: `data` itself, or a container of `kind` whose body and meta block `data` holds.
fn file(kind: &Kind, wrap: bool, data: &[u8]) -> Vec<u8> {
    if !wrap || data.len() < 2 {
        return data.to_vec();
    }
    let at = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
    let (body, meta) = data[2..].split_at(at);
    container::to_vec(kind, body, meta)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let wrap = pick & 0x80 != 0;
    match pick & 0x3 {
        0 => {
            for kind in [IMAGES, CHUNK, ROWS] {
                let bytes = file(&kind, wrap, rest);
                if let Ok(p) = container::open(&bytes, &kind) {
                    assert_eq!(container::PREAMBLE + p.body.len() + p.meta.len(), bytes.len());
                    let mut r = le::Reader::new(p.meta);
                    while r.u64().is_some() {}
                }
            }
        }
        1 => {
            let path = dir().join("images.pimg");
            std::fs::write(&path, file(&IMAGES, wrap, rest)).expect("write");
            if let Ok(c) = preprocess::cache::ImageCache::open(&path) {
                let _ = c.verify();
                for i in 0..c.len() {
                    if let Ok(img) = c.get(i) {
                        assert_eq!(img.pixels.len(), img.width as usize * img.height as usize * 3);
                    }
                }
            }
        }
        2 => {
            let store_dir = dir().join("chunks");
            let key = serde_json::json!({ "fuzz": 1 });
            let mut store = checkpoint::chunks::ChunkStore::open(&store_dir, &key, 4, 4, "items").expect("store");
            std::fs::write(store.chunk_path(0), file(&CHUNK, wrap, rest)).expect("write");
            let _ = store.load();
        }
        _ => {
            let path = dir().join("rows.pact");
            std::fs::write(&path, file(&ROWS, wrap, rest)).expect("write");
            let key = serde_json::json!({ "fuzz": 1 });
            if let Ok(c) = train::activations::ActivationCache::open(&path, &key) {
                let all: Vec<usize> = (0..c.len()).collect();
                let _ = c.batch(&all);
            }
        }
    }
});
