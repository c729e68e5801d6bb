//! Printing results on stdout and notes on stderr without ever panicking.
//!
//! `println!` panics when the reader of stdout has gone (`keyscribe models list | head -1`).
//! Like ripgrep, keyscribe treats a closed stdout as a normal end: the printing functions
//! here return [`StdoutClosed`], which the command passes up with `?` and [`super::main`]
//! turns into exit code 0 without a message. Notes for people go to stderr, where a closed
//! pipe just drops them.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

use anyhow::Context;
use thiserror::Error;

/// The reader of stdout closed it: there is nobody left to print for, so the command ends
/// successfully.
#[derive(Debug, Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Writes `text` on stdout as it is, flushed at once (for streamed output).
pub fn write(text: impl Display) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = write!(stdout, "{text}").and_then(|()| stdout.flush());
    match written {
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => other.context("writing to stdout"),
    }
}

/// Writes `text` and a newline on stdout.
pub fn line(text: impl Display) -> anyhow::Result<()> {
    write(format_args!("{text}\n"))
}

/// Writes `value` as pretty-printed JSON and a newline on stdout.
pub fn json_pretty(value: &impl serde::Serialize) -> anyhow::Result<()> {
    line(serde_json::to_string_pretty(value)?)
}

/// Writes `value` as one line of JSON on stdout.
pub fn json_line(value: &impl serde::Serialize) -> anyhow::Result<()> {
    line(serde_json::to_string(value)?)
}

/// Writes a note for people on stderr, followed by a newline. A closed or broken stderr
/// loses the note instead of stopping the command (`eprintln!` would panic).
pub fn note(text: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Whether `error` says that stdout was closed by its reader.
pub fn is_closed_stdout(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<StdoutClosed>().is_some())
}
