//! Command output on standard output, through [`out!`] and [`outln!`] instead of `print!` and
//! `println!`: those panic when the reader has gone (`troupe get … | head -1` closes the pipe
//! and the next write fails with EPIPE, which Rust reports as an error, not a signal). Here a
//! closed pipe ends the command quietly with success, as `cat` or `grep` do, since whoever
//! closed it has read all they wanted; any other write failure ends it with an error.

use std::fmt;
use std::io::{self, Write};

/// Writes `args` to standard output, ending the process if it can no longer be written.
pub(crate) fn write(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        gone(&e);
    }
}

/// Writes `args` and a newline to standard output, like [`write`].
pub(crate) fn write_line(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        gone(&e);
    }
}

/// Ends the process after a failed write to standard output. Nothing is left to clean up: a
/// CLI verb's output is the last thing it does with anything it holds.
fn gone(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // Standard error may be gone as well; there is nobody else to tell.
    let _ = writeln!(io::stderr(), "error: writing to standard output: {e}");
    std::process::exit(1);
}
