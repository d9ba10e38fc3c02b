//! Compiles every first-party C file in `c/` (the shared stage helpers and one
//! file per algorithm) into the static library `libalgo.a` and links it into
//! this crate (`links = "algo"`).
//!
//! Warnings stay on (`-Wall -Wextra`); when the `CI` environment variable is
//! set they become errors, so C warnings cannot land unnoticed. The kernels
//! are always built with `-O2`, also in debug builds, so tests of large
//! inputs stay quick.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-env-changed=CI");

    let in_ci = std::env::var_os("CI").is_some();

    let mut sources: Vec<PathBuf> = std::fs::read_dir("c")
        .expect("read native/c")
        .map(|entry| entry.expect("read native/c entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();

    cc::Build::new()
        .files(&sources)
        .include("c")
        .std("c11")
        .opt_level(2)
        // `-Wall` and `-Wextra` on GCC/Clang (`/W4` on MSVC).
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(in_ci)
        .compile("algo");
}
