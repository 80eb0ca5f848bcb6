//! The integration tests of `model` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`model/<module>/<check>`). One module: `cargo test -p model --test it <module>::`.

mod api;
mod backbones;
mod common;
mod densenet_tiny;
mod ensemble;
mod golden_full;
mod import;
mod multiscale;
