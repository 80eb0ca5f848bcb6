//! The TOML configs as users write them: arbitrary text as a pipeline config, a training config
//! and a sweep config (`pipeline::load_pipeline_config`, `load_train_config`,
//! `pipeline::sweep::Sweep::load`). Each must return a config or an error naming the file: never
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.toml");
    std::fs::write(&path, data).expect("write the input");
    if let Err(e) = pipeline::load_pipeline_config(Some(&path), &pipeline::PipelineOverrides::default()) {
        assert!(!e.to_string().is_empty());
    }
    let _ = pipeline::load_train_config(Some(&path), None, &pipeline::Overrides::default());
    let _ = pipeline::sweep::Sweep::load(&path);
});
