//! The integration tests of `testkit` as one test binary (one link instead of one per file): each
//! module was a `tests/<module>.rs` of its own and keeps that name as the test-file part of the
//! check ids (`testkit/<module>/<check>`). One module: `cargo test -p testkit --test it <module>::`.

mod frozen_fixtures;
