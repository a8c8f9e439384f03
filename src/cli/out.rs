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

/// `error`'s message and its causes, `: `-separated like `{:#}`, leaving
/// out a cause whose text the message before it already ends with (errors
/// that print their source and also return it from `source()`).
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_its_message_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read key file k: {source}")]
        struct Read {
            source: std::io::Error,
        }
        let e = anyhow::Error::from(Read { source: io }).context("the key is required");
        assert_eq!(
            error_chain(&e),
            "the key is required: cannot read key file k: no such file"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
