//! Compiles the first-party C routine (`c/algo.c`) into the static library
//! `libalgo.a` and links it into this crate (`links = "algo"`).
//!
//! Warnings stay on (`-Wall -Wextra`); when the `CI` environment variable is
//! set they become errors, so C warnings cannot land unnoticed.

fn main() {
    println!("cargo:rerun-if-changed=c");
    println!("cargo:rerun-if-env-changed=CI");

    let in_ci = std::env::var_os("CI").is_some();

    cc::Build::new()
        .file("c/algo.c")
        .include("c")
        .std("c11")
        // `-Wall` and `-Wextra` on GCC/Clang (`/W4` on MSVC).
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(in_ci)
        .compile("algo");
}
