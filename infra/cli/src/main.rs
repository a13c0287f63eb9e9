//! The `jitvm` binary: wiring only; see the library.

fn main() {
    std::process::exit(jitvm_cli::main_exit());
}
