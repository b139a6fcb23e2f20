//! Loading a scenario: YAML text to a validated [`Scenario`], with every problem reported at
//! once as `path:line:column: message`, the source line and a caret.
//!
//! How all problems are found in one go: the text is parsed into a tree that keeps positions
//! (`yaml.rs`), then deserialized; when that fails, the error is recorded with its position,
//! the node it happened in is dropped (a map entry or list element, so the field falls back
//! to its default or the step disappears), and deserialization runs again. Errors at nodes
//! that lost a child are consequences of an earlier drop and are not reported. Semantic
//! validation then runs on what was read, skipping checks that depend on a dropped part.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use super::model::Scenario;
use super::validate::{self, Partial, PathSeg, Severity};
use super::yaml::{self, DeError, ErrKind, Kind, NodeId, Role, Seg, Tree};

/// At most this many deserialization passes (each finds one problem).
const MAX_PASSES: usize = 200;

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("read scenario {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read scenario {} as UTF-8 text", path.display())]
    NotUtf8 {
        path: PathBuf,
        #[source]
        source: std::str::Utf8Error,
    },
    /// The scenario has problems; Display prints every one and a count line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl LoadError {
    /// The problems found, when the file could be read.
    pub fn diagnostics(&self) -> Option<&Diagnostics> {
        match self {
            LoadError::Invalid(d) => Some(d),
            _ => None,
        }
    }
}

/// A scenario that loaded, and the warnings it produced (print them; they do not fail a run).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    pub warnings: Diagnostics,
}

/// Reads, parses and validates the scenario at `path`. Warnings are dropped; use
/// [`load_file_with_warnings`] to show them.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    load_file_with_warnings(path).map(|l| l.scenario)
}

/// Parses and validates scenario text; `origin` names it in messages (usually the path).
pub fn load_str(text: &str, origin: &str) -> Result<Scenario, LoadError> {
    load_str_with_warnings(text, origin).map(|l| l.scenario)
}

pub fn load_file_with_warnings(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|source| LoadError::NotUtf8 {
        path: path.to_path_buf(),
        source,
    })?;
    load_str_with_warnings(text, &path.display().to_string())
}

pub fn load_str_with_warnings(text: &str, origin: &str) -> Result<Loaded, LoadError> {
    let mut diags = Diagnostics {
        origin: origin.to_string(),
        items: Vec::new(),
    };
    let mut tree = match yaml::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            diags.push(text, Severity::Error, e.span, e.message);
            return Err(LoadError::Invalid(diags));
        }
    };
    let Some(root) = tree.root else {
        diags.push_at(
            text,
            Severity::Error,
            1,
            1,
            1,
            "empty scenario: expected a map with at least `name` and `steps`".into(),
        );
        return Err(LoadError::Invalid(diags));
    };
    if !matches!(tree.nodes[root].kind, Kind::Map(_)) {
        let span = tree.span(root);
        diags.push(
            text,
            Severity::Error,
            span,
            "a scenario is a map with at least `name` and `steps`".into(),
        );
        return Err(LoadError::Invalid(diags));
    }

    let read = read_scenario(&mut tree, root);
    for (node, message) in &read.errors {
        diags.push(text, Severity::Error, tree.span(*node), message.clone());
    }
    let Some(scenario) = read.scenario else {
        diags.sort();
        return Err(LoadError::Invalid(diags));
    };
    for problem in validate::check(&scenario, &read.partial) {
        let path: Vec<Seg> = problem
            .path
            .iter()
            .map(|s| match s {
                PathSeg::Key(k) => Seg::Key(k.to_string()),
                PathSeg::Index(i) => Seg::Index(*i),
            })
            .collect();
        let node = tree.locate(&path, &read.removed).unwrap_or(root);
        diags.push(text, problem.severity, tree.span(node), problem.message);
    }
    diags.sort();
    if diags.error_count() > 0 {
        return Err(LoadError::Invalid(diags));
    }
    Ok(Loaded {
        scenario,
        warnings: diags,
    })
}

struct Read {
    scenario: Option<Scenario>,
    errors: Vec<(NodeId, String)>,
    removed: HashSet<NodeId>,
    partial: Partial,
}

/// Deserializes the tree again and again, dropping what failed, until it reads.
fn read_scenario(tree: &mut Tree, root: NodeId) -> Read {
    let mut removed: HashSet<NodeId> = HashSet::new();
    // (map, key) of every entry dropped, to tell "missing because we dropped it" apart.
    let mut removed_keys: HashSet<(NodeId, String)> = HashSet::new();
    let mut placeholders: HashSet<&'static str> = HashSet::new();
    let mut errors = Vec::new();
    let mut scenario = None;
    for _ in 0..MAX_PASSES {
        let e: DeError = match Scenario::deserialize(yaml::De::new(tree, &removed, root)) {
            Ok(s) => {
                scenario = Some(s);
                break;
            }
            Err(e) => e,
        };
        let node = e.node.unwrap_or(root);
        let consequence = match &e.kind {
            ErrKind::MissingField(f) => removed_keys.contains(&(node, f.to_string())),
            _ => tree.contains_removed(node, &removed),
        };
        if !consequence {
            errors.push((node, e.message(tree)));
        }
        if node == root {
            // Stand in for a required top-level field so validation can still run.
            match e.kind {
                ErrKind::MissingField(f @ ("name" | "steps")) if placeholders.insert(f) => {
                    let value = if f == "name" {
                        Kind::Scalar {
                            value: String::new(),
                            quoted: true,
                        }
                    } else {
                        Kind::Seq(Vec::new())
                    };
                    if tree.add_entry(root, f, value).is_some() {
                        continue;
                    }
                }
                _ => {}
            }
            break;
        }
        let target = match tree.nodes[node].role {
            Role::Key { value } => value,
            _ => node,
        };
        if !removed.insert(target) {
            break;
        }
        if let (Some(map), Role::Value { key }) =
            (tree.nodes[target].parent, tree.nodes[target].role)
        {
            if let Some(k) = tree.scalar(key) {
                removed_keys.insert((map, k.to_string()));
            }
        }
    }
    let mut partial = Partial::default();
    let dropped = removed
        .iter()
        .map(|&r| tree.path(r))
        .chain(placeholders.iter().map(|p| vec![Seg::Key(p.to_string())]));
    for path in dropped {
        match path.first() {
            Some(Seg::Key(k)) => match k.as_str() {
                "name" => partial.name = true,
                "devices" => partial.devices = true,
                "filesystem" => partial.filesystem = true,
                "setup" | "steps" | "cleanup" => partial.steps = true,
                _ => {}
            },
            _ => partial.steps = true,
        }
    }
    Read {
        scenario,
        errors,
        removed,
        partial,
    }
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

    fn sort(&mut self) {
        // Stable: problems at one place keep the order they were found in.
        self.items.sort_by_key(|d| (d.line, d.column));
    }

    fn push(&mut self, text: &str, severity: Severity, span: saphyr_parser::Span, message: String) {
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

    fn push_at(
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

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        writeln!(f, "{}:{}: {label}{}", self.line, self.column, self.message)?;
        let Some(src) = &self.source_line else {
            return Ok(());
        };
        let number = self.line.to_string();
        let pad = " ".repeat(number.len());
        // Tabs are shown as four spaces, and the caret moved to match.
        let before: String = src.chars().take(self.column - 1).collect();
        let indent = before
            .chars()
            .map(|c| if c == '\t' { 4 } else { 1 })
            .sum::<usize>();
        writeln!(f, "{pad} |")?;
        writeln!(f, "{number} | {}", src.replace('\t', "    "))?;
        write!(
            f,
            "{pad} | {}{}",
            " ".repeat(indent),
            "^".repeat(self.width)
        )
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            writeln!(f, "{}:{d}", self.origin)?;
            writeln!(f)?;
        }
        let errors = self.error_count();
        let warnings = self.items.len() - errors;
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
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
