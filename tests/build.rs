//! Tells the end-to-end tests which target triple release archives are named after.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=E2E_HOST_TARGET={target}");
}
