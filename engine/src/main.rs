//! The `kiln` binary: the command line over every in-tree backend.

use std::process::ExitCode;

fn main() -> ExitCode {
    kiln::cli::main_with(kiln::backends::default_registry())
}
