//! Diagnostics of a YAML file: one problem each, with `file:line:column`, the message (which
//! names the field) and the source line with the problem underlined, as rustc shows it.
//!
//! annotate-snippets was considered for rendering and not taken: it puts the location on a
//! second line (`--> file:line:column`), while crashrig's rule (and editors' quickfix parsers)
//! want `file:line:column: message` first; the renderer below is forty lines.

use std::fmt;

use saphyr_parser::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    /// Reported, but the file still loads.
    Warning,
}

/// One problem, with where it is and the source line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    /// The source line (tabs expanded), if the position is inside the text.
    pub source_line: Option<String>,
    /// Characters to underline from `column` (at least 1).
    pub width: usize,
}

/// The problems of one scenario file. Display prints one block per diagnostic and a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    pub origin: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// No problems yet, in the file `origin` names.
    pub fn new(origin: &str) -> Self {
        Diagnostics {
            origin: origin.to_string(),
            items: Vec::new(),
        }
    }

    pub(crate) fn sort(&mut self) {
        // Stable: problems at one place keep the order they were found in.
        self.items.sort_by_key(|d| (d.line, d.column));
    }

    pub(crate) fn push(&mut self, text: &str, severity: Severity, span: Span, message: String) {
        let (start, end) = (span.start, span.end);
        let width = if end.line() == start.line() && end.index() > start.index() {
            end.index() - start.index()
        } else {
            1
        };
        self.push_at(
            text,
            severity,
            start.line(),
            start.col() + 1,
            width,
            message,
        );
    }

    pub(crate) fn push_at(
        &mut self,
        text: &str,
        severity: Severity,
        line: usize,
        column: usize,
        width: usize,
        message: String,
    ) {
        let source_line = text
            .split('\n')
            .nth(line.saturating_sub(1))
            .map(|l| l.trim_end_matches('\r').to_string());
        let width = match &source_line {
            Some(l) => width.clamp(1, l.chars().count().saturating_sub(column - 1).max(1)),
            None => 1,
        };
        self.items.push(Diagnostic {
            severity,
            line,
            column,
            message,
            source_line,
            width,
        });
    }
}

/// Characters of a source line shown around a problem.
const WINDOW: usize = 120;

impl Diagnostic {
    /// `origin:line:column: message`, then the source line with a caret under the problem,
    /// as rustc shows it.
    pub fn render(&self, origin: &str) -> String {
        let label = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        let mut out = format!(
            "{origin}:{}:{}: {label}{}",
            self.line, self.column, self.message
        );
        if let Some(src) = &self.source_line {
            let number = self.line.to_string();
            let pad = " ".repeat(number.len());
            // A long line (minified or generated YAML) is shown as a window around the
            // problem, so one diagnostic stays a few lines of terminal.
            let chars: Vec<char> = src.chars().collect();
            let from = if chars.len() <= WINDOW {
                0
            } else {
                (self.column - 1)
                    .saturating_sub(WINDOW / 2)
                    .min(chars.len())
            };
            let to = (from + WINDOW).min(chars.len());
            let (lead, tail) = (
                if from > 0 { "..." } else { "" },
                if to < chars.len() { "..." } else { "" },
            );
            let shown = &chars[from..to];
            // Tabs are shown as four spaces, and the caret moved to match.
            let indent: usize = lead.len()
                + shown
                    .iter()
                    .take(self.column - 1 - from)
                    .map(|&c| if c == '\t' { 4 } else { 1 })
                    .sum::<usize>();
            let width = self.width.min(to.saturating_sub(self.column - 1).max(1));
            out.push_str(&format!(
                "\n{pad} |\n{number} | {lead}{}{tail}\n{pad} | {}{}",
                shown.iter().collect::<String>().replace('\t', "    "),
                " ".repeat(indent),
                "^".repeat(width)
            ));
        }
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{}\n", d.render(&self.origin))?;
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        let plural = |n: usize, word| crate::report::plural(n as u64, word);
        match (errors, warnings) {
            (0, 0) => write!(f, "no problems in {}", self.origin),
            (0, w) => write!(f, "warning: {} in {}", plural(w, "warning"), self.origin),
            (e, 0) => write!(f, "error: {} in {}", plural(e, "problem"), self.origin),
            (e, w) => write!(
                f,
                "error: {} (and {}) in {}",
                plural(e, "problem"),
                plural(w, "warning"),
                self.origin
            ),
        }
    }
}
