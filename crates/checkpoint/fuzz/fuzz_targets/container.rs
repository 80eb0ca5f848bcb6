//! Every container reader (petal/safetensors, PyTorch zip, PyTorch legacy) through `import_bytes`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = checkpoint::import_bytes(data, std::path::Path::new("fuzz-input"));
});
