//! The integration tests of `infer` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`infer/<module>/<check>`). One module: `cargo test -p infer --test it <module>::`.

mod legacy;
mod predictor;
