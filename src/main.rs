//! The `keyscribe` command: parses arguments, calls the library, prints results.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    keyscribe::allocator::reuse_freed_memory();
    cli::main()
}
