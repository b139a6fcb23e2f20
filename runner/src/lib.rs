//! crashrig: build kernels, boot them in QEMU, run crash-and-remount scenarios, count what the
//! kernel returned, bisect and compare.
//!
//! The pure, synchronous core (scenario model, outcome classification, bisection, matrix
//! planning) has no I/O; the async shell (vm, guest, kernel builds, run orchestration) drives
//! QEMU, SSH and make around it. The engine never prints: it emits [`report::Event`]s that
//! reporters consume.

// Terminal output that never panics. `println!` and `eprintln!` panic when the stream is a
// closed pipe (`crashrig run ... 2>&1 | head`), which killed a run mid-way with exit 101 and
// left its results unfinished; output that cannot be written is dropped instead (the results
// files are the record).
// Text from the guest (a step's output, console lines, a kernel message) reaches the terminal
// through these too, so control characters other than newline and tab are shown escaped: an
// escape sequence a workload printed must not clear or retitle the user's terminal.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{}", $crate::terminal_text(&format!($($t)*)));
    }};
}
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), "{}", $crate::terminal_text(&format!($($t)*)));
    }};
}
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{}", $crate::terminal_text(&format!($($t)*)));
    }};
}

/// `text` with every control character but newline and tab written as an escape (`\u{1b}`).
pub fn terminal_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

pub mod amplify;
pub mod bisect;
pub mod cache;
pub mod cli;
pub mod doctor;
pub mod guest;
pub mod host;
pub mod image;
pub mod kernel;
pub mod matrix;
pub mod outcome;
pub mod process;
pub mod report;
pub mod run;
pub mod scenario;
pub mod vm;
pub mod yaml;

/// Process exit codes. `git bisect run` helpers (`crashrig check`) use 0/1/125 instead.
pub mod exit {
    /// Every expectation held.
    pub const OK: i32 = 0;
    /// An expectation was violated: the bug was seen.
    pub const EXPECTATION_FAILED: i32 = 1;
    /// Configuration or infrastructure error (bad YAML, missing tool, QEMU failed to start).
    pub const CONFIG_OR_INFRA: i32 = 2;
    /// Interrupted by SIGINT/SIGTERM; finished results were kept.
    pub const INTERRUPTED: i32 = 130;
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn guest_escape_sequences_reach_the_terminal_escaped() {
        assert_eq!(
            super::terminal_text("last output: \u{1}\u{1b}[2J\r\n\tok"),
            "last output: \\u{1}\\u{1b}[2J\\u{d}\n\tok"
        );
        assert!(matches!(
            super::terminal_text("plain é\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
