//! Compiles `csrc/jpeg_shim.c` (the two libjpeg calls of `src/jpeg.rs`, against the vendored libjpeg
//! 6.2 ABI headers) and links libjpeg-turbo from `PETAL_LIBJPEG`: a folder whose `lib/` holds
//! `libjpeg.so` (or `libjpeg.dylib`). `cargo xtask setup` provisions it from the Pillow wheel on PyPI,
//! the very build Pillow decodes with, and `.cargo/config.toml` points `PETAL_LIBJPEG` at it. No
//! system development package and no pkg-config are involved; only a C compiler.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=PETAL_LIBJPEG");
    let Some(root) = std::env::var_os("PETAL_LIBJPEG").map(PathBuf::from) else {
        fail("PETAL_LIBJPEG is not set: run `cargo xtask setup` in the petal repository (it provisions libjpeg-turbo from PyPI), or point PETAL_LIBJPEG at a folder whose lib/ holds libjpeg.so of libjpeg-turbo (libjpeg 6.2 ABI)");
    };
    let lib = root.join("lib");
    let found = ["libjpeg.so", "libjpeg.dylib"].iter().any(|f| lib.join(f).exists());
    if !found {
        fail(&format!(
            "PETAL_LIBJPEG={} has no lib/libjpeg.so: run `cargo xtask setup` (it provisions libjpeg-turbo from PyPI), or point PETAL_LIBJPEG at a libjpeg-turbo folder",
            root.display()
        ));
    }
    println!("cargo:rerun-if-changed={}", lib.display());
    cc::Build::new().file("csrc/jpeg_shim.c").include("csrc/libjpeg62").warnings(true).extra_warnings(true).compile("petal_jpeg_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=jpeg");
}

/// Stops the build with one line naming the problem and the fix.
fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    std::process::exit(1);
}
