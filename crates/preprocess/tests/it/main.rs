//! The integration tests of `preprocess` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`preprocess/<module>/<check>`). One module: `cargo test -p preprocess --test it <module>::`.

mod dataset;
mod five_crop;
mod golden;
mod loader_cache;
mod pixels;
