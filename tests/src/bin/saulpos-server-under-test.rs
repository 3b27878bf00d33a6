//! The server binary for the end-to-end tests: the same `cli::main` as `saulpos-server`, built
//! inside this crate so the tests can find it through `CARGO_BIN_EXE_*`.

fn main() -> std::process::ExitCode {
    saulpos_server::cli::main()
}
