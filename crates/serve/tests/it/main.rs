//! The serve crate's integration tests, one binary (one link of libtorch) with a module per area.
//! Check ids stay `serve/<module>/<check>`.

mod common;

mod api;
mod batching;
mod browser;
mod rejections;
mod runtime;
mod security;
