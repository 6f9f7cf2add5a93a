//! Records the target triple this crate is compiled for: a volunteer runs only
//! bundles built for the same one.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=G2_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
