//! Helpers shared by the integration tests.
#![allow(dead_code)]

use checkpoint::{Checkpoint, ClassEntry, DType, Interpolation, Metadata, Preprocessing, TensorData};
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn expected() -> serde_json::Value {
    let s = std::fs::read_to_string(fixtures().join("expected.json")).expect("expected.json is committed");
    serde_json::from_str(&s).expect("expected.json parses")
}

pub fn hex(b: &[u8]) -> String {
    petal_common::hex(b)
}

/// Deterministic pseudo-random f32s (xorshift), so big checkpoints need no RNG crate.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// A small checkpoint using every metadata field, every dtype and both reserved prefixes.
pub fn sample_checkpoint() -> Checkpoint {
    let mut tensors = checkpoint::TensorMap::new();
    tensors.insert("features.conv0.weight".into(), TensorData::from_f32(vec![2, 3, 1, 1], &values(1, 6)));
    tensors.insert("classifier.bias".into(), TensorData::from_f32(vec![3], &[0.5, -1.25, 3.0]));
    tensors.insert("features.norm0.num_batches_tracked".into(), TensorData::new(DType::I64, vec![], 42i64.to_le_bytes().to_vec()).unwrap());
    for (i, d) in DType::ALL.iter().enumerate() {
        let n = 3 * d.size_in_bytes();
        let bytes: Vec<u8> = (0..n).map(|k| ((k * 7 + i) % 2) as u8).collect();
        tensors.insert(format!("dtypes.{}", d.name()), TensorData::new(*d, vec![3], bytes).unwrap());
    }
    tensors.insert("optimizer/state.0.exp_avg".into(), TensorData::from_f32(vec![2], &[0.1, 0.2]));
    tensors.insert("rng/torch_cpu".into(), TensorData::new(DType::U8, vec![4], vec![1, 2, 3, 4]).unwrap());
    let meta = Metadata {
        libtorch_version: Some("2.13.0".into()),
        arch: "densenet121".into(),
        arch_config: serde_json::json!({"growth_rate": 32, "block_config": [6, 12, 24, 16]}),
        classes: vec![
            ClassEntry { folder: "1".into(), index: 0, name: Some("pink primrose".into()) },
            ClassEntry { folder: "10".into(), index: 1, name: Some("globe thistle".into()) },
            ClassEntry { folder: "2".into(), index: 2, name: None },
        ],
        preprocessing: Some(Preprocessing {
            input_size: 224,
            resize_size: 256,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            interpolation: Interpolation::Bilinear,
        }),
        head: serde_json::json!({"hidden": [512], "dropout": 0.2}),
        hyperparameters: serde_json::json!({"lr": 0.001, "epochs": 5}),
        metrics: serde_json::json!({"valid_acc": 0.93}),
        optimizer: Some(serde_json::json!({"kind": "adam", "step": 10})),
        rng: Some(serde_json::json!({"seed": 7})),
        ..Metadata::default()
    };
    Checkpoint { meta, tensors }
}

/// Minimal pickle writer for hand-made hostile files.
#[derive(Default)]
pub struct Pk(pub Vec<u8>);

impl Pk {
    pub fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn s(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    pub fn int(&mut self, i: i32) -> &mut Self {
        self.0.push(b'J');
        self.0.extend_from_slice(&i.to_le_bytes());
        self
    }
    pub fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend_from_slice(format!("{m}\n{n}\n").as_bytes());
        self
    }
    pub fn tuple_of_ints(&mut self, v: &[i32]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor(storage('0', F32, numel), offset, shape, stride)`, memoised at `memo`.
    pub fn tensor(&mut self, numel: i32, offset: i32, shape: &[i32], stride: &[i32], memo: u8) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor");
        self.op(b"(");
        self.op(b"(").s("storage").global("torch", "FloatStorage").s("0").s("cpu").int(numel).op(b"Nt").op(b"Q");
        self.int(offset).tuple_of_ints(shape).tuple_of_ints(stride);
        self.op(b"tR").op(&[b'q', memo])
    }
}

/// A legacy-format PyTorch file: header pickles, `main` pickle, one F32 storage "0" of
/// `numel` elements (zeros).
pub fn legacy_file(main: &[u8], numel: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    f.extend_from_slice(b"\x80\x02M\xe9\x03.");
    f.extend_from_slice(b"\x80\x02}q\x00X\x0d\x00\x00\x00little_endianq\x01\x88s.");
    f.extend_from_slice(main);
    f.extend_from_slice(b"\x80\x02]q\x00X\x01\x00\x00\x000q\x01a.");
    f.extend_from_slice(&(numel as i64).to_le_bytes());
    f.resize(f.len() + numel * 4, 0);
    f
}
