//! A YAML document as a tree of nodes that remember where they came from, and a serde
//! `Deserializer` over it whose errors name the node they happened at.
//!
//! serde_yaml stops at the first error and `serde_yaml::Value` forgets positions, so the
//! loaders parse with `saphyr-parser` (events with spans) into this tree instead. A loader
//! can then drop a node that failed and deserialize again ([`super::collect`]), which is how
//! it finds every problem in one go.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{self, DeserializeSeed, Unexpected, Visitor};

pub(crate) type NodeId = usize;

/// Deeper nesting than any scenario needs; bounds the recursion of the deserializer.
const MAX_DEPTH: usize = 64;
/// Bounds alias expansion ("billion laughs") and the cost of re-deserializing.
const MAX_NODES: usize = 50_000;

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// `quoted`: any style but plain, or tagged `!!str`; such a scalar is always a string.
    Scalar {
        value: String,
        quoted: bool,
    },
    Seq(Vec<NodeId>),
    Map(Vec<(NodeId, NodeId)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Root,
    /// A mapping key; `value` is the node it maps to.
    Key {
        value: NodeId,
    },
    Value {
        key: NodeId,
    },
    Elem {
        index: usize,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: Kind,
    pub span: Span,
    pub parent: Option<NodeId>,
    pub role: Role,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    pub nodes: Vec<Node>,
    pub root: Option<NodeId>,
    /// Top-level keys whose list elements are steps (a scenario's `setup`, `steps`,
    /// `cleanup`): messages inside them say "in umount step". Default: none.
    pub step_sections: &'static [&'static str],
}

#[derive(Debug, Clone)]
pub(crate) struct SyntaxError {
    pub message: String,
    pub span: Span,
}

enum Frame {
    Seq(NodeId, Vec<NodeId>),
    Map(NodeId, Vec<(NodeId, NodeId)>, Option<NodeId>),
}

/// Parses one YAML document. An empty document gives a tree without a root.
pub(crate) fn parse(text: &str) -> Result<Tree, SyntaxError> {
    let mut tree = Tree::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, NodeId> = HashMap::new();
    let mut documents = 0;
    let parser = Parser::new_from_str(text);
    for event in parser {
        let (event, span) = event.map_err(|e| SyntaxError {
            message: format!("{}{}", e.info(), open_flow(text, &tree, &stack)),
            span: Span::empty(*e.marker()),
        })?;
        let done = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        message: "more than one YAML document; a scenario is a single document"
                            .into(),
                        span,
                    });
                }
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let mut quoted = style != ScalarStyle::Plain;
                if let Some(tag) = tag {
                    let core = tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:";
                    if core && tag.suffix == "str" {
                        quoted = true;
                    } else {
                        return Err(SyntaxError {
                            message: format!(
                                "unsupported YAML tag `{}{}` (only `!!str` is understood)",
                                tag.handle, tag.suffix
                            ),
                            span,
                        });
                    }
                }
                let id = tree.push(
                    Kind::Scalar {
                        value: value.into_owned(),
                        quoted,
                    },
                    span,
                )?;
                if anchor > 0 {
                    anchors.insert(anchor, id);
                }
                id
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                if let Some(tag) = tag {
                    return Err(SyntaxError {
                        message: format!(
                            "unsupported YAML tag `{}{}` on a collection",
                            tag.handle, tag.suffix
                        ),
                        span,
                    });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        span,
                    });
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                let id = tree.push(
                    if is_seq {
                        Kind::Seq(Vec::new())
                    } else {
                        Kind::Map(Vec::new())
                    },
                    span,
                )?;
                if anchor > 0 {
                    anchors.insert(anchor, id);
                }
                stack.push(if is_seq {
                    Frame::Seq(id, Vec::new())
                } else {
                    Frame::Map(id, Vec::new(), None)
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq(id, items)) => {
                    tree.nodes[id].kind = Kind::Seq(items);
                    id
                }
                Some(Frame::Map(id, entries, _)) => {
                    tree.nodes[id].kind = Kind::Map(entries);
                    id
                }
                None => continue,
            },
            Event::Alias(anchor) => match anchors.get(&anchor) {
                // An alias to a collection that is still open refers to itself.
                Some(&target) if !stack_contains(&stack, target) => tree.clone_subtree(target)?,
                _ => {
                    return Err(SyntaxError {
                        message: "alias to an unknown or enclosing anchor".into(),
                        span,
                    })
                }
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
        };
        attach(&mut tree, &mut stack, done);
    }
    // Aliases can nest deeper than the text does; the deserializer recurses per level.
    if let Some(root) = tree.root {
        let mut todo = vec![(root, 1)];
        while let Some((id, depth)) = todo.pop() {
            if depth > MAX_DEPTH {
                return Err(SyntaxError {
                    message: format!("nesting deeper than {MAX_DEPTH} levels (through aliases)"),
                    span: tree.nodes[id].span,
                });
            }
            match &tree.nodes[id].kind {
                Kind::Scalar { .. } => {}
                Kind::Seq(items) => todo.extend(items.iter().map(|&i| (i, depth + 1))),
                Kind::Map(entries) => todo.extend(entries.iter().map(|&(_, v)| (v, depth + 1))),
            }
        }
    }
    Ok(tree)
}

/// Where the innermost `[` or `{` still open starts, for syntax errors inside it (a missing
/// `]` shows up as an error lines later).
fn open_flow(text: &str, tree: &Tree, stack: &[Frame]) -> String {
    stack
        .iter()
        .rev()
        .find_map(|f| {
            let (Frame::Seq(id, _) | Frame::Map(id, _, _)) = f;
            let start = tree.nodes[*id].span.start;
            let line = text.split('\n').nth(start.line().checked_sub(1)?)?;
            let what = match line.chars().nth(start.col())? {
                '[' => "list",
                '{' => "map",
                _ => return None,
            };
            Some(format!(
                " (in the {what} opened at line {}, column {})",
                start.line(),
                start.col() + 1
            ))
        })
        .unwrap_or_default()
}

fn stack_contains(stack: &[Frame], id: NodeId) -> bool {
    stack.iter().any(|f| match f {
        Frame::Seq(s, _) | Frame::Map(s, _, _) => *s == id,
    })
}

fn attach(tree: &mut Tree, stack: &mut [Frame], id: NodeId) {
    match stack.last_mut() {
        None => {
            tree.nodes[id].role = Role::Root;
            tree.root = Some(id);
        }
        Some(Frame::Seq(parent, items)) => {
            tree.nodes[id].parent = Some(*parent);
            tree.nodes[id].role = Role::Elem { index: items.len() };
            items.push(id);
        }
        Some(Frame::Map(parent, entries, pending)) => {
            tree.nodes[id].parent = Some(*parent);
            match pending.take() {
                None => *pending = Some(id),
                Some(key) => {
                    tree.nodes[key].role = Role::Key { value: id };
                    tree.nodes[id].role = Role::Value { key };
                    entries.push((key, id));
                }
            }
        }
    }
}

impl Tree {
    fn push(&mut self, kind: Kind, span: Span) -> Result<NodeId, SyntaxError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(SyntaxError {
                message: format!("document too large (more than {MAX_NODES} nodes)"),
                span,
            });
        }
        self.nodes.push(Node {
            kind,
            span,
            parent: None,
            role: Role::Root,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Adds a mapping entry that was not in the text (a placeholder for a required field),
    /// positioned at the map itself.
    pub(crate) fn add_entry(&mut self, map: NodeId, key: &str, value: Kind) -> Option<()> {
        let span = self.nodes[map].span;
        let k = self
            .push(
                Kind::Scalar {
                    value: key.into(),
                    quoted: true,
                },
                span,
            )
            .ok()?;
        let v = self.push(value, span).ok()?;
        self.nodes[k].parent = Some(map);
        self.nodes[v].parent = Some(map);
        self.nodes[k].role = Role::Key { value: v };
        self.nodes[v].role = Role::Value { key: k };
        match &mut self.nodes[map].kind {
            Kind::Map(entries) => entries.push((k, v)),
            _ => return None,
        }
        Some(())
    }

    fn clone_subtree(&mut self, id: NodeId) -> Result<NodeId, SyntaxError> {
        let node = self.nodes[id].clone();
        let new = self.push(node.kind.clone(), node.span)?;
        match node.kind {
            Kind::Scalar { .. } => {}
            Kind::Seq(items) => {
                let mut copies = Vec::with_capacity(items.len());
                for (index, item) in items.into_iter().enumerate() {
                    let c = self.clone_subtree(item)?;
                    self.nodes[c].parent = Some(new);
                    self.nodes[c].role = Role::Elem { index };
                    copies.push(c);
                }
                self.nodes[new].kind = Kind::Seq(copies);
            }
            Kind::Map(entries) => {
                let mut copies = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let (ck, cv) = (self.clone_subtree(k)?, self.clone_subtree(v)?);
                    self.nodes[ck].parent = Some(new);
                    self.nodes[cv].parent = Some(new);
                    self.nodes[ck].role = Role::Key { value: cv };
                    self.nodes[cv].role = Role::Value { key: ck };
                    copies.push((ck, cv));
                }
                self.nodes[new].kind = Kind::Map(copies);
            }
        }
        Ok(new)
    }

    /// Where to point for a node: a scalar's whole text, a collection's first character.
    pub(crate) fn span(&self, id: NodeId) -> Span {
        let node = &self.nodes[id];
        match node.kind {
            Kind::Scalar { .. } => node.span,
            _ => Span::empty(node.span.start),
        }
    }

    pub(crate) fn scalar(&self, id: NodeId) -> Option<&str> {
        match &self.nodes[id].kind {
            Kind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    fn is_null(&self, id: NodeId) -> bool {
        matches!(&self.nodes[id].kind, Kind::Scalar { value, quoted: false } if resolve(value) == Plain::Null)
    }

    /// The path from the root to `id`, as keys and list indices. A key node has the path of
    /// the map it is in.
    pub(crate) fn path(&self, id: NodeId) -> Vec<Seg> {
        let mut segs = Vec::new();
        let mut cur = id;
        if let Role::Key { .. } = self.nodes[cur].role {
            match self.nodes[cur].parent {
                Some(p) => cur = p,
                None => return segs,
            }
        }
        loop {
            let node = &self.nodes[cur];
            match node.role {
                Role::Root | Role::Key { .. } => break,
                Role::Value { key } => {
                    segs.push(Seg::Key(self.scalar(key).unwrap_or("?").to_string()))
                }
                Role::Elem { index } => segs.push(Seg::Index(index)),
            }
            match node.parent {
                Some(p) => cur = p,
                None => break,
            }
        }
        segs.reverse();
        segs
    }

    /// The node `path` leads to, following it as far as it exists (so a missing field gives
    /// the map that lacks it). List indices count only elements that are not `removed`.
    pub(crate) fn locate(&self, path: &[Seg], removed: &HashSet<NodeId>) -> Option<NodeId> {
        let mut cur = self.root?;
        for seg in path {
            let next = match (seg, &self.nodes[cur].kind) {
                (Seg::Key(k), Kind::Map(entries)) => entries
                    .iter()
                    .find(|(key, v)| !removed.contains(v) && self.scalar(*key) == Some(k))
                    .map(|&(_, v)| v),
                (Seg::Index(i), Kind::Seq(items)) => items
                    .iter()
                    .filter(|e| !removed.contains(e))
                    .nth(*i)
                    .copied(),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => break,
            }
        }
        Some(cur)
    }

    /// Whether a removed node lies in the subtree of `id`.
    pub(crate) fn contains_removed(&self, id: NodeId, removed: &HashSet<NodeId>) -> bool {
        removed.iter().any(|&r| {
            let mut cur = Some(r);
            while let Some(c) = cur {
                if c == id {
                    return true;
                }
                cur = self.nodes[c].parent;
            }
            false
        })
    }

    /// What the error messages call the place a node is in: the field (`vm.memory`,
    /// `retry`) and, inside a step, which step (`umount step`).
    fn context(&self, id: NodeId) -> (Option<String>, Option<String>) {
        let path = self.path(id);
        let step_kind = match path.as_slice() {
            [Seg::Key(section), Seg::Index(_), ..]
                if self.step_sections.contains(&section.as_str()) =>
            {
                // The path came from the tree, so it leads to the step's own element.
                self.locate(&path[..2], &HashSet::new()).map(|elem| {
                    let name = match &self.nodes[elem].kind {
                        Kind::Scalar { value, .. } => Some(value.as_str()),
                        Kind::Map(entries) if entries.len() == 1 => self.scalar(entries[0].0),
                        _ => None,
                    };
                    // Only what looks like a step name makes "in <name> step" read well.
                    name.filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                    })
                    .map(str::to_string)
                })
            }
            _ => None,
        };
        match step_kind {
            Some(kind) => {
                let scope = match kind {
                    Some(k) => format!("{k} step"),
                    None => format!("`{}`", join(&path[..2])),
                };
                let rest = if path.len() > 3 { &path[3..] } else { &[] };
                let field = (!rest.is_empty()).then(|| join(rest));
                (field, Some(scope))
            }
            None => ((!path.is_empty()).then(|| join(&path)), None),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn join(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k)
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// How a plain scalar resolves under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plain {
    Null,
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str,
}

fn resolve(v: &str) -> Plain {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    let digits = |s: &str, radix| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = v.strip_prefix("0x") {
        if digits(hex, 16) {
            return u64::from_str_radix(hex, 16).map_or(Plain::Str, Plain::Unsigned);
        }
    }
    if let Some(oct) = v.strip_prefix("0o") {
        if digits(oct, 8) {
            return u64::from_str_radix(oct, 8).map_or(Plain::Str, Plain::Unsigned);
        }
    }
    let unsigned = v.strip_prefix('+').unwrap_or(v);
    if digits(unsigned, 10) {
        return unsigned.parse().map_or(Plain::Str, Plain::Unsigned);
    }
    if let Some(neg) = v.strip_prefix('-') {
        if digits(neg, 10) {
            return v.parse().map_or(Plain::Str, Plain::Signed);
        }
    }
    let float_like = v.chars().any(|c| c.is_ascii_digit())
        && v.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if float_like {
        if let Ok(f) = v.parse::<f64>() {
            return Plain::Float(f);
        }
    }
    Plain::Str
}

/// A deserialization error, located at the node it happened in once it leaves that node.
#[derive(Debug)]
pub(crate) struct DeError {
    pub kind: ErrKind,
    pub node: Option<NodeId>,
}

#[derive(Debug)]
pub(crate) enum ErrKind {
    Custom(String),
    /// A complete message that needs no context added.
    Plain(String),
    InvalidType(String, String),
    InvalidValue(String, String),
    InvalidLength(usize, String),
    UnknownVariant(String, &'static [&'static str]),
    UnknownField(String, &'static [&'static str]),
    MissingField(&'static str),
    DuplicateField(&'static str),
}

impl DeError {
    fn new(kind: ErrKind) -> Self {
        DeError { kind, node: None }
    }

    fn at(mut self, node: NodeId) -> Self {
        self.node.get_or_insert(node);
        self
    }

    /// The message for this error, with the field and step it happened in.
    pub fn message(&self, tree: &Tree) -> String {
        let (field, scope) = match self.node {
            Some(n) => tree.context(n),
            None => (None, None),
        };
        // "in umount step", "in `vm`": where a field is missing or unknown.
        let within = match (&field, &scope) {
            (_, Some(s)) => format!(" in {s}"),
            (Some(f), None) => format!(" in `{f}`"),
            (None, None) => String::new(),
        };
        // "for `retry` in umount step", "for `iterations`": which value is wrong.
        let of = match (&field, &scope) {
            (Some(f), Some(s)) => format!(" for `{f}` in {s}"),
            (Some(f), None) => format!(" for `{f}`"),
            (None, Some(s)) => format!(" for {s}"),
            (None, None) => String::new(),
        };
        match &self.kind {
            ErrKind::Plain(m) => m.clone(),
            ErrKind::Custom(m) => match m.find(", expected") {
                Some(i) => format!("{}{of}{}", &m[..i], &m[i..]),
                None => format!("{m}{of}"),
            },
            ErrKind::InvalidType(u, e) => format!("invalid type: {u}, expected {e}{of}"),
            ErrKind::InvalidValue(u, e) => format!("invalid value: {u}, expected {e}{of}"),
            ErrKind::InvalidLength(n, e) => format!("invalid length {n}, expected {e}{of}"),
            ErrKind::UnknownVariant(v, expected) => {
                format!("unknown value `{v}`{of}, expected {}", one_of(expected))
            }
            ErrKind::UnknownField(f, []) => {
                format!("unknown field `{f}`{within}, there are no fields")
            }
            ErrKind::UnknownField(f, expected) => {
                format!("unknown field `{f}`{within}, expected {}", one_of(expected))
            }
            ErrKind::MissingField(f) => format!("missing field `{f}`{within}"),
            ErrKind::DuplicateField(f) => format!("duplicate field `{f}`{within}"),
        }
    }
}

pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => "nothing".into(),
        1 => quoted[0].clone(),
        2 => format!("{} or {}", quoted[0], quoted[1]),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(&Tree::default()))
    }
}

impl std::error::Error for DeError {}

fn unexpected_text(u: Unexpected<'_>) -> String {
    match u {
        Unexpected::Unit => "null".into(),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(ErrKind::Custom(msg.to_string()))
    }
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(ErrKind::InvalidType(
            unexpected_text(unexp),
            exp.to_string(),
        ))
    }
    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(ErrKind::InvalidValue(
            unexpected_text(unexp),
            exp.to_string(),
        ))
    }
    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        DeError::new(ErrKind::InvalidLength(len, exp.to_string()))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(ErrKind::UnknownVariant(variant.into(), expected))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(ErrKind::UnknownField(field.into(), expected))
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::new(ErrKind::MissingField(field))
    }
    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(ErrKind::DuplicateField(field))
    }
}

/// Deserializes one node. `null` makes it read as an absent value: a bare `- power-cut`
/// is the step kind with no fields.
#[derive(Clone, Copy)]
pub(crate) struct De<'a> {
    tree: &'a Tree,
    removed: &'a HashSet<NodeId>,
    node: NodeId,
    null: bool,
}

impl<'a> De<'a> {
    pub(crate) fn new(tree: &'a Tree, removed: &'a HashSet<NodeId>, node: NodeId) -> Self {
        De {
            tree,
            removed,
            node,
            null: false,
        }
    }

    fn at(self, node: NodeId) -> Self {
        De {
            node,
            null: false,
            ..self
        }
    }

    fn kind(&self) -> &'a Kind {
        &self.tree.nodes[self.node].kind
    }

    fn is_null(&self) -> bool {
        self.null || self.tree.is_null(self.node)
    }

    fn live_entries(&self) -> Vec<(NodeId, NodeId)> {
        match self.kind() {
            Kind::Map(entries) => entries
                .iter()
                .filter(|(_, v)| !self.removed.contains(v))
                .copied()
                .collect(),
            _ => Vec::new(),
        }
    }

    fn unexpected(&self) -> String {
        if self.null {
            return "null".into();
        }
        match self.kind() {
            Kind::Seq(_) => "sequence".into(),
            Kind::Map(_) => "map".into(),
            Kind::Scalar {
                value,
                quoted: true,
            } => unexpected_text(Unexpected::Str(value)),
            Kind::Scalar { value, .. } => unexpected_text(match resolve(value) {
                Plain::Null => Unexpected::Unit,
                Plain::Bool(b) => Unexpected::Bool(b),
                Plain::Unsigned(u) => Unexpected::Unsigned(u),
                Plain::Signed(i) => Unexpected::Signed(i),
                Plain::Float(f) => Unexpected::Float(f),
                Plain::Str => Unexpected::Str(value),
            }),
        }
    }

    fn visit_map_entries<V: Visitor<'a>>(
        self,
        entries: Vec<(NodeId, NodeId)>,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let last_key = Cell::new(None);
        let access = MapA {
            de: self,
            entries,
            pos: 0,
            value: None,
            last_key: &last_key,
        };
        visitor.visit_map(access).map_err(|e| {
            // serde reports a repeated key once the whole map is read; point at the repeat.
            match (&e.kind, e.node, last_key.get()) {
                (ErrKind::DuplicateField(_), None, Some(k)) => e.at(k),
                _ => e,
            }
        })
    }

    fn any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.null {
            return visitor.visit_unit();
        }
        match self.kind() {
            Kind::Scalar {
                value,
                quoted: true,
            } => visitor.visit_str(value),
            Kind::Scalar { value, .. } => match resolve(value) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Unsigned(u) => visitor.visit_u64(u),
                Plain::Signed(i) => visitor.visit_i64(i),
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str => visitor.visit_str(value),
            },
            Kind::Seq(items) => {
                let items = items
                    .iter()
                    .filter(|e| !self.removed.contains(e))
                    .copied()
                    .collect();
                visitor.visit_seq(SeqA {
                    de: self,
                    items,
                    pos: 0,
                })
            }
            Kind::Map(_) => {
                let entries = self.live_entries();
                self.repeated_key(&entries)?;
                self.visit_map_entries(entries, visitor)
            }
        }
    }

    /// A key written twice in a map read as a whole (a matrix's `parameters`, a scenario's
    /// `env`): serde would keep the last value without a word. Fixed structures get serde's
    /// own "duplicate field" instead.
    fn repeated_key(&self, entries: &[(NodeId, NodeId)]) -> Result<(), DeError> {
        let mut seen: HashMap<&str, NodeId> = HashMap::new();
        for &(k, _) in entries {
            if let Kind::Scalar { value, .. } = &self.tree.nodes[k].kind {
                if let Some(&first) = seen.get(value.as_str()) {
                    let at = self.tree.nodes[first].span.start;
                    return Err(DeError::new(ErrKind::Plain(format!(
                        "duplicate key `{value}` (first written at line {}, column {})",
                        at.line(),
                        at.col() + 1
                    )))
                    .at(k));
                }
                seen.insert(value, k);
            }
        }
        Ok(())
    }
}

// Each method stamps an error that leaves it without a position with its own node: the
// innermost node an error passes through is where it happened.
macro_rules! located {
    ($($method:ident($($arg:ident: $ty:ty),*) => $body:expr;)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, DeError> {
                let node = self.node;
                #[allow(clippy::redundant_closure_call)]
                ($body)(self, $($arg,)* visitor).map_err(|e: DeError| e.at(node))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for De<'de> {
    type Error = DeError;

    located! {
        deserialize_any() => |d: Self, v: V| d.any(v);
        deserialize_bool() => |d: Self, v: V| match d.kind() {
            Kind::Scalar { value, quoted: false } if !d.null => match resolve(value) {
                Plain::Bool(b) => v.visit_bool(b),
                _ => d.any(v),
            },
            _ => d.any(v),
        };
        deserialize_str() => |d: Self, v: V| match d.kind() {
            Kind::Scalar { value, .. } if !d.is_null() => v.visit_str(value),
            _ => d.any(v),
        };
        deserialize_string() => |d: Self, v: V| match d.kind() {
            Kind::Scalar { value, .. } if !d.is_null() => v.visit_str(value),
            _ => d.any(v),
        };
        deserialize_identifier() => |d: Self, v: V| match d.kind() {
            Kind::Scalar { value, .. } if !d.null => v.visit_str(value),
            _ => d.any(v),
        };
        deserialize_option() => |d: Self, v: V| if d.is_null() { v.visit_none() } else { v.visit_some(d) };
        deserialize_unit() => |d: Self, v: V| if d.is_null() { v.visit_unit() } else { d.any(v) };
        deserialize_unit_struct(_name: &'static str) => |d: Self, _n, v: V| if d.is_null() { v.visit_unit() } else { d.any(v) };
        deserialize_newtype_struct(_name: &'static str) => |d: Self, _n, v: V| v.visit_newtype_struct(d);
        // An empty value reads as an empty list (`setup:` with every step commented out).
        deserialize_seq() => |d: Self, v: V| if d.is_null() {
            v.visit_seq(SeqA { de: d, items: Vec::new(), pos: 0 })
        } else {
            d.any(v)
        };
        deserialize_tuple(_len: usize) => |d: Self, _l, v: V| d.any(v);
        deserialize_tuple_struct(_name: &'static str, _len: usize) => |d: Self, _n, _l, v: V| d.any(v);
        deserialize_map() => |d: Self, v: V| if d.is_null() { d.visit_map_entries(Vec::new(), v) } else { d.any(v) };
        deserialize_struct(_name: &'static str, _fields: &'static [&'static str]) => |d: Self, _n, _f, v: V| {
            match d.kind() {
                _ if d.is_null() => d.visit_map_entries(Vec::new(), v),
                Kind::Map(_) => d.visit_map_entries(d.live_entries(), v),
                _ => Err(DeError::new(ErrKind::InvalidType(d.unexpected(), "a map".into()))),
            }
        };
        deserialize_enum(name: &'static str, variants: &'static [&'static str]) => |d: Self, n, vs, v: V| d.enum_(n, vs, v);
        deserialize_ignored_any() => |_d: Self, v: V| v.visit_unit();
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
    }
}

impl<'de> De<'de> {
    fn enum_<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let step = name == "Step";
        let expected = if step {
            "a step such as `mount: {}`".to_string()
        } else {
            one_of(variants)
        };
        let access = match self.kind() {
            _ if self.is_null() => {
                return Err(DeError::new(ErrKind::InvalidType("null".into(), expected)))
            }
            Kind::Scalar { .. } => EnumA {
                de: self,
                key: self.node,
                content: None,
            },
            Kind::Map(_) => match self.live_entries().as_slice() {
                [(k, v)] => EnumA {
                    de: self,
                    key: *k,
                    content: Some(*v),
                },
                entries if step => {
                    let keys: Vec<String> = entries
                        .iter()
                        .map(|(k, _)| format!("`{}`", self.tree.scalar(*k).unwrap_or("?")))
                        .collect();
                    return Err(DeError::new(ErrKind::Plain(if keys.is_empty() {
                        "empty step: a step is a map with one key naming its kind, such as `mount: {}`"
                            .into()
                    } else {
                        format!(
                            "a step is a map with one key naming its kind, found {} keys ({}); \
                             start each step with its own `-`",
                            keys.len(),
                            keys.join(", ")
                        )
                    })));
                }
                _ => {
                    return Err(DeError::new(ErrKind::InvalidType("map".into(), expected)));
                }
            },
            Kind::Seq(_) => {
                return Err(DeError::new(ErrKind::InvalidType(
                    "sequence".into(),
                    expected,
                )))
            }
        };
        let key = access.key;
        visitor.visit_enum(access).map_err(|e| match e.kind {
            // Only the step's own name: an unknown value inside the step keeps its message.
            ErrKind::UnknownVariant(v, expected) if step && e.node == Some(key) => DeError {
                kind: ErrKind::Plain(format!(
                    "unknown step kind `{v}`, expected {}",
                    one_of(expected)
                )),
                node: e.node,
            },
            _ => e,
        })
    }
}

struct MapA<'a, 'c> {
    de: De<'a>,
    entries: Vec<(NodeId, NodeId)>,
    pos: usize,
    value: Option<NodeId>,
    last_key: &'c Cell<Option<NodeId>>,
}

impl<'de> de::MapAccess<'de> for MapA<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(&(k, v)) = self.entries.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        self.value = Some(v);
        self.last_key.set(Some(k));
        // Errors made after the node was read (by a hand-written `Deserialize` checking
        // the value) belong to the node too.
        seed.deserialize(self.de.at(k))
            .map(Some)
            .map_err(|e| e.at(k))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, DeError> {
        match self.value.take() {
            Some(v) => seed.deserialize(self.de.at(v)).map_err(|e| e.at(v)),
            None => Err(de::Error::custom("value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.pos)
    }
}

struct SeqA<'a> {
    de: De<'a>,
    items: Vec<NodeId>,
    pos: usize,
}

impl<'de> de::SeqAccess<'de> for SeqA<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(&item) = self.items.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        seed.deserialize(self.de.at(item))
            .map(Some)
            .map_err(|e| e.at(item))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.pos)
    }
}

struct EnumA<'a> {
    de: De<'a>,
    key: NodeId,
    content: Option<NodeId>,
}

impl<'de> de::EnumAccess<'de> for EnumA<'de> {
    type Error = DeError;
    type Variant = VariantA<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantA<'de>), DeError> {
        let value = seed
            .deserialize(self.de.at(self.key))
            .map_err(|e| e.at(self.key))?;
        let content = match self.content {
            Some(c) => self.de.at(c),
            // No value: read the variant's content as absent, located at its name.
            None => De {
                null: true,
                ..self.de.at(self.key)
            },
        };
        Ok((value, VariantA { content }))
    }
}

struct VariantA<'a> {
    content: De<'a>,
}

impl<'de> de::VariantAccess<'de> for VariantA<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.content.is_null() {
            Ok(())
        } else {
            Err(DeError::new(ErrKind::InvalidType(
                self.content.unexpected(),
                "nothing after the name".into(),
            ))
            .at(self.content.node))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        let node = self.content.node;
        seed.deserialize(self.content).map_err(|e| e.at(node))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self.content, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self.content, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_like_yaml_1_2() {
        let table = [
            ("~", Plain::Null),
            ("", Plain::Null),
            ("true", Plain::Bool(true)),
            ("20", Plain::Unsigned(20)),
            ("+5", Plain::Unsigned(5)),
            ("-3", Plain::Signed(-3)),
            ("0x10", Plain::Unsigned(16)),
            ("1.5", Plain::Float(1.5)),
            ("2G", Plain::Str),
            ("10s", Plain::Str),
            ("yes", Plain::Str),
            ("e", Plain::Str),
        ];
        for (text, want) in table {
            assert_eq!(resolve(text), want, "{text}");
        }
    }

    #[test]
    fn nodes_remember_positions_and_paths() {
        let tree = parse("a: 1\nlist:\n  - x\n  - { k: v }\n").unwrap();
        let path = [Seg::Key("list".into()), Seg::Index(1), Seg::Key("k".into())];
        let v = tree.locate(&path, &HashSet::new()).unwrap();
        assert_eq!(tree.scalar(v), Some("v"));
        assert_eq!(
            (
                tree.nodes[v].span.start.line(),
                tree.nodes[v].span.start.col()
            ),
            (4, 9)
        );
        assert_eq!(tree.path(v), path);
        assert_eq!(join(&path), "list[1].k");
    }

    #[test]
    fn aliases_are_expanded_and_self_references_rejected() {
        let tree = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let b = tree
            .locate(&[Seg::Key("b".into()), Seg::Index(1)], &HashSet::new())
            .unwrap();
        assert_eq!(tree.scalar(b), Some("2"));
        assert!(parse("a: &x [*x]\n").is_err());
        // Each alias nests the previous one a level deeper.
        let mut chain = String::from("a0: &a0 [x]\n");
        for i in 1..200 {
            chain.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let err = parse(&chain).unwrap_err();
        assert!(err.message.contains("through aliases"), "{}", err.message);
        // Exponential expansion stops at the node limit.
        let mut laughs = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = format!("*l{}", i - 1);
            laughs.push_str(&format!("l{i}: &l{i} [{}]\n", vec![p; 10].join(", ")));
        }
        assert!(parse(&laughs).unwrap_err().message.contains("too large"));
    }

    #[test]
    fn deep_nesting_and_second_documents_are_errors() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        assert!(parse("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .message
            .contains("more than one YAML document"));
    }
}
