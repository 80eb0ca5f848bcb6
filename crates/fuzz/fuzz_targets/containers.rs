//! The cache files petal reads back, all one container format (`petal_common::container`): the
//! first input byte picks the reader, the rest is the file. The image cache (`ImageCache::open`,
//! `verify`, every entry), a chunk of resumable work (`ChunkStore::load`) and an activation cache
//! (`ActivationCache::open`, every row) must read the file or say why not: never panic, never read
//! out of bounds. The container itself is read as each kind, with and without a body checksum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use petal_common::container::{self, le, Kind};

fn dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("petal-fuzz-containers").tempdir_in(std::env::temp_dir()).expect("temp dir")).path()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else { return };
    match pick % 4 {
        0 => {
            for body_crc in [false, true] {
                let kind = Kind { magic: *b"PETALIMG", version: 2, name: "fuzz", body_crc };
                if let Ok(p) = container::open(file, &kind) {
                    assert!(container::PREAMBLE + p.body.len() + p.meta.len() == file.len());
                    let mut r = le::Reader::new(p.meta);
                    while r.u64().is_some() {}
                }
            }
        }
        1 => {
            let path = dir().join("images.pimg");
            std::fs::write(&path, file).expect("write");
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
            std::fs::write(store.chunk_path(0), file).expect("write");
            let _ = store.load();
        }
        _ => {
            let path = dir().join("rows.pact");
            std::fs::write(&path, file).expect("write");
            let key = serde_json::json!({ "fuzz": 1 });
            if let Ok(c) = train::activations::ActivationCache::open(&path, &key) {
                let all: Vec<usize> = (0..c.len()).collect();
                let _ = c.batch(&all);
            }
        }
    }
});
