//! The `saulpos-server` binary: everything lives in the library, see `saulpos_server::cli`.

fn main() -> std::process::ExitCode {
    saulpos_server::cli::main()
}
