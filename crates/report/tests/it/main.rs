//! The integration tests of `report` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`report/<module>/<check>`). One module: `cargo test -p report --test it <module>::`.

mod figures;
mod files;
