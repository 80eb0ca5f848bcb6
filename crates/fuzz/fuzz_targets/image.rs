//! What every upload goes through: format sniffing and decoding of arbitrary bytes
//! (`preprocess::decode_rgb_bytes`, libjpeg-turbo for JPEG), under a pixel limit. It must return an
//! error or an image within the limit: never panic, never allocate past the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;

const MAX_PIXELS: u64 = 4_000_000;

fuzz_target!(|data: &[u8]| {
    let _ = preprocess::decode::sniff(data);
    let limits = preprocess::DecodeLimits { max_pixels: MAX_PIXELS };
    if let Ok(img) = preprocess::decode_rgb_bytes(data, std::path::Path::new("fuzz-input"), &limits) {
        assert!(u64::from(img.width()) * u64::from(img.height()) <= MAX_PIXELS, "{}x{} passed the limit", img.width(), img.height());
    }
});
