//! The integration tests of `checkpoint` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`checkpoint/<module>/<check>`). One module: `cargo test -p checkpoint --test it <module>::`.

mod atomic_kill;
mod common;
mod format;
mod import;
mod robustness;
