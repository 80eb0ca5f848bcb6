//! The pickle reader on arbitrary bytes: must return, never panic or allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = checkpoint::fuzz_pickle(data);
});
