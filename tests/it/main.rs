//! The workspace-level end-to-end tests of the `petal` binary as one test binary (one link of
//! libtorch instead of one per file): each module was a `tests/<module>.rs` of its own and keeps
//! that name as the test-file part of the check ids (`petal/<module>/<check>`). One module:
//! `cargo test -p petal --test it <module>::`.

mod common;
mod e2e;
mod export_cli;
mod flaky_s3;
mod full_disk;
mod holdout;
mod legacy_finetune;
mod partial;
mod pixels_e2e;
mod quantize;
mod resume_chunks;
mod runs;
mod runtime;
mod serve;
mod shard;
mod smoke_tch;
mod sweep;
