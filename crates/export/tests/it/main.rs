//! The integration tests of `export` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`export/<module>/<check>`). One module: `cargo test -p export --test it <module>::`.

mod common;
mod errors;
mod int8;
mod onnx_tract;
mod onnxruntime;
mod python_runtimes;
mod torchscript;
