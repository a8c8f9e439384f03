//! Standard output of the commands. Every line goes through a locked
//! `stdout` and returns `std::io::Result`, so a closed pipe
//! (`chartbridge status | head -1`) ends the command with an error that
//! `main` recognises as [`is_broken_pipe`] and turns into a quiet exit 0 —
//! instead of `println!`'s panic on `EPIPE`.

/// `writeln!` to the locked standard output; `?`-propagates the I/O error.
macro_rules! outln {
    () => {
        { use std::io::Write as _; writeln!(std::io::stdout().lock())? }
    };
    ($($arg:tt)*) => {
        { use std::io::Write as _; writeln!(std::io::stdout().lock(), $($arg)*)? }
    };
}

/// `write!` to the locked standard output, flushed; `?`-propagates.
macro_rules! out {
    ($($arg:tt)*) => {
        {
            use std::io::Write as _;
            let mut lock = std::io::stdout().lock();
            write!(lock, $($arg)*)?;
            lock.flush()?
        }
    };
}

pub(crate) use {out, outln};

/// Whether an error (anywhere in its chain) is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The options every command that changes state shares: `--dry-run`,
/// `--json` and `--why` (the note the audit trail keeps, sealed).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ChangeArgs {
    /// List what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Why (recorded sealed in the audit trail).
    #[arg(long)]
    pub why: Option<String>,
}
