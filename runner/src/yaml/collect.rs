//! Reading a YAML file into a model with every problem found at once.
//!
//! The text is parsed into a [`Tree`] that keeps positions, then deserialized; when that
//! fails, the error is recorded with its node, the node is dropped (a map entry or list
//! element, so the field falls back to its default or the element disappears), and
//! deserialization runs again. Errors at nodes that lost a child are consequences of an
//! earlier drop and are not reported. A required top-level field that is missing gets a
//! placeholder so the rest can still be read and checked.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::diag::{Diagnostics, Severity};
use super::tree::{self, De, DeError, ErrKind, Kind, NodeId, Role, Seg, Tree};

/// At most this many deserialization passes (each finds one problem).
const MAX_PASSES: usize = 200;

/// Why a YAML file could not be read as text.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(
        "line {line}, column {column} is not UTF-8 (byte {byte:#04x}); YAML files are UTF-8 text"
    )]
    NotUtf8 {
        line: usize,
        column: usize,
        byte: u8,
    },
}

/// The largest YAML file read (16 MiB): a scenario, matrix or recipe is a few KB. A path
/// that names something else (`/dev/zero`, a disk image) was read until the OOM killer
/// ended crashrig, and a FIFO blocked it for good.
pub const MAX_YAML_BYTES: u64 = 16 << 20;

/// The text of the YAML file at `path`; a directory, a missing file, anything but a regular
/// file (a device, a FIFO: never waited on), a file over [`MAX_YAML_BYTES`] or bytes that
/// are not UTF-8 are errors (the latter with the line and column of the first bad byte).
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    let bytes = crate::kernel::read_input(path, MAX_YAML_BYTES)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let before = String::from_utf8_lossy(&bytes[..good]);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ReadError::NotUtf8 {
            line,
            column,
            byte: bytes[good],
        }
    })
}

/// The keys of `text`'s top-level map, in order: none when it is not a map or not YAML (the
/// loaders then say what is wrong). `crashrig lint` tells matrices from scenarios by them.
pub(crate) fn top_level_keys(text: &str) -> Vec<String> {
    let Ok(tree) = tree::parse(text) else {
        return Vec::new();
    };
    match tree.root.map(|root| &tree.nodes[root].kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .filter_map(|&(k, _)| tree.scalar(k).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// A parsed document whose root is a map, or the diagnostics saying why not. `what` names
/// the file kind in messages ("scenario", "matrix"); `needs` what its map must hold
/// ("`name` and `steps`").
pub(crate) fn parse_map(
    text: &str,
    diags: &mut Diagnostics,
    what: &str,
    needs: &str,
) -> Option<(Tree, NodeId)> {
    let tree = match tree::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            diags.push(text, Severity::Error, e.span, e.message);
            return None;
        }
    };
    let Some(root) = tree.root else {
        diags.push_at(
            text,
            Severity::Error,
            1,
            1,
            1,
            format!("empty {what}: expected a map with at least {needs}"),
        );
        return None;
    };
    if !matches!(tree.nodes[root].kind, Kind::Map(_)) {
        let span = tree.span(root);
        diags.push(
            text,
            Severity::Error,
            span,
            format!("a {what} is a map with at least {needs}"),
        );
        return None;
    }
    Some((tree, root))
}

/// What [`deserialize_all`] read: the value (unless a problem stopped it at the root), each
/// problem at its node, and what was dropped to get past them.
pub(crate) struct Collected<T> {
    pub value: Option<T>,
    pub errors: Vec<(NodeId, String)>,
    /// Nodes dropped because they failed.
    pub removed: HashSet<NodeId>,
    /// Required top-level fields that were missing and read as a placeholder.
    pub placeholders: HashSet<&'static str>,
}

impl<T> Collected<T> {
    /// Whether a semantic problem at `path` (list indices counting what was read) would
    /// only repeat one already reported: it is in a required field that was missing, or at
    /// a node that lost a part (an empty list after its only element failed).
    pub fn damaged(&self, tree: &Tree, path: &[Seg]) -> bool {
        if let Some(Seg::Key(top)) = path.first() {
            if self.placeholders.contains(top.as_str()) {
                return true;
            }
        }
        tree.locate(path, &self.removed)
            .is_some_and(|n| tree.contains_removed(n, &self.removed))
    }

    /// Adds every problem to `diags`, at its node.
    pub fn report(&self, text: &str, tree: &Tree, diags: &mut Diagnostics) {
        for (node, message) in &self.errors {
            diags.push(text, Severity::Error, tree.span(*node), message.clone());
        }
    }
}

/// Deserializes the map at `root` again and again, dropping what failed, until it reads.
/// `required` lists top-level fields to stand in for when missing (name and placeholder).
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    tree: &mut Tree,
    root: NodeId,
    required: &[(&'static str, Kind)],
) -> Collected<T> {
    let mut removed: HashSet<NodeId> = HashSet::new();
    // (map, key) of every entry dropped, to tell "missing because we dropped it" apart.
    let mut removed_keys: HashSet<(NodeId, String)> = HashSet::new();
    let mut placeholders: HashSet<&'static str> = HashSet::new();
    let mut errors = Vec::new();
    let mut value = None;
    for pass in 0.. {
        if pass == MAX_PASSES {
            errors.push((
                root,
                format!("stopped after {MAX_PASSES} problems; fix these and load the file again"),
            ));
            break;
        }
        let e: DeError = match T::deserialize(De::new(tree, &removed, root)) {
            Ok(v) => {
                value = Some(v);
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
            // Stand in for a required top-level field so the rest can still be read.
            if let ErrKind::MissingField(f) = e.kind {
                if let Some((name, kind)) = required.iter().find(|(n, _)| *n == f) {
                    if placeholders.insert(name)
                        && tree.add_entry(root, name, kind.clone()).is_some()
                    {
                        continue;
                    }
                }
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
    Collected {
        value,
        errors,
        removed,
        placeholders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_is_not_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        std::fs::write(&path, b"name: t\nsteps: [\xc3\xa9, \xff]\n").unwrap();
        assert_eq!(
            read_text(&path).unwrap_err().to_string(),
            "line 2, column 12 is not UTF-8 (byte 0xff); YAML files are UTF-8 text"
        );
        assert!(matches!(
            read_text(dir.path()).unwrap_err(),
            ReadError::Io(_)
        ));
    }

    /// `/dev/zero` was read until memory ran out (the OOM killer ended crashrig at 22 GB);
    /// a FIFO blocked crashrig in open(2), deaf to SIGTERM.
    #[test]
    fn only_a_regular_file_of_bounded_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let zero = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            zero.contains("character device, not a regular file"),
            "{zero}"
        );
        let fifo = dir.path().join("fifo.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_text(&fifo).unwrap_err().to_string();
        assert!(err.contains("a FIFO, not a regular file"), "{err}");
        let big = dir.path().join("big.yaml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_YAML_BYTES + 1).unwrap();
        let err = read_text(&big).unwrap_err().to_string();
        assert!(err.contains("more than the 16 MiB"), "{err}");
    }
}
