//! `petal`: the command-line front end that wires the stage crates together.
fn main() {}
