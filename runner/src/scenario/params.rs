//! Scenario parameters: the `parameters:` declarations, `${name}` substitution into the
//! document tree before it is deserialized (so a duration, a size or a count can be a
//! parameter as well as a command), and the reserved names that set a field of their own.
//!
//! One mechanism serves `--param` on the command line and a matrix's `parameters`: both are a
//! [`Setting`] handed to the loader, which checks names and values against the file and
//! reports problems at their `file:line:column`.

use std::collections::{BTreeMap, HashMap};

use saphyr_parser::Span;

use super::model::{Scenario, Step};
use crate::yaml::{Kind, NodeId, Role, Tree};

/// Parameter name -> value, as written (`jobs` -> `12`, `load-time` -> `1s`).
pub type Setting = BTreeMap<String, String>;

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    pub name: String,
    /// The value a run uses unless told otherwise.
    pub default: String,
    /// The values worth trying, in file order, the default first when it is not listed
    /// (a `range` is expanded). Just the default when the declaration lists none.
    pub values: Vec<String>,
}

/// Names with a meaning of their own besides `${name}`: `cpus` and `memory` set `vm.cpus`
/// and `vm.memory`, `filesystem` the filesystem's type (and its mkfs options).
pub const RESERVED: &[&str] = &["cpus", "memory", "filesystem"];
/// Bounds on what a declaration may ask for; a search over more is not a search.
pub const MAX_PARAMETERS: usize = 32;
pub const MAX_VALUES: usize = 64;
pub const MAX_VALUE_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 40;

/// A declaration with the nodes its parts came from.
#[derive(Debug, Clone)]
pub(crate) struct Decl {
    pub param: Parameter,
    pub key: NodeId,
    /// The node of each of `param.values` (the default's node for an added default).
    pub value_nodes: Vec<NodeId>,
}

type Errors = Vec<(NodeId, String)>;

/// Whether `name` may be a parameter: lowercase letters, digits, `-` and `_`, starting with a
/// letter. Other `${...}` (such as the shell's `${HOME}`) are left alone.
pub fn is_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What is wrong with a parameter value, if anything.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("is empty".into())
    } else if value.chars().count() > MAX_VALUE_LEN {
        Err(format!("is longer than {MAX_VALUE_LEN} characters"))
    } else if value.chars().any(char::is_control) {
        Err("holds a control character (such as a line break)".into())
    } else if value.contains("${") {
        Err("holds `${` (a value is not substituted again)".into())
    } else {
        Ok(())
    }
}

/// Reads the `parameters` map at `node`: the declarations that read, and the names of those
/// that did not (their uses are not reported again as unknown).
pub(crate) fn declarations(
    tree: &Tree,
    node: NodeId,
    errors: &mut Errors,
) -> (Vec<Decl>, Vec<String>) {
    let entries = match &tree.nodes[node].kind {
        Kind::Map(entries) => entries.clone(),
        Kind::Scalar {
            value,
            quoted: false,
        } if is_null(value) => return Default::default(),
        _ => {
            errors.push((
                node,
                "`parameters` must be a map of names to `{ default: V, values: [V, ...] }`".into(),
            ));
            return Default::default();
        }
    };
    let mut decls: Vec<Decl> = Vec::new();
    let mut broken = Vec::new();
    for (k, v) in entries {
        let Some(name) = tree.scalar(k).map(str::to_string) else {
            errors.push((k, "a parameter name must be a plain word".into()));
            continue;
        };
        if !is_name(&name) {
            errors.push((
                k,
                format!(
                    "parameter name `{name}` must be lowercase letters, digits, `-` or `_`, \
                     start with a letter and be at most {MAX_NAME_LEN} characters"
                ),
            ));
            continue;
        }
        if decls.iter().any(|d| d.param.name == name) {
            errors.push((k, format!("parameter `{name}` is declared twice")));
            continue;
        }
        if decls.len() == MAX_PARAMETERS {
            errors.push((k, format!("more than {MAX_PARAMETERS} parameters")));
            break;
        }
        match declaration(tree, &name, k, v, errors) {
            Some(d) => decls.push(d),
            None => broken.push(name),
        }
    }
    (decls, broken)
}

fn declaration(
    tree: &Tree,
    name: &str,
    key: NodeId,
    v: NodeId,
    errors: &mut Errors,
) -> Option<Decl> {
    let scalar_value = |node: NodeId, errors: &mut Errors| -> Option<String> {
        match tree.scalar(node) {
            Some(s) => match check_value(s) {
                Ok(()) => Some(s.to_string()),
                Err(why) => {
                    errors.push((node, format!("value `{s}` of parameter `{name}` {why}")));
                    None
                }
            },
            None => {
                errors.push((
                    node,
                    format!("a value of parameter `{name}` must be a scalar (a number, a duration, a word)"),
                ));
                None
            }
        }
    };
    // `jobs: 12` is a parameter with a default and nothing else to try.
    let entries = match &tree.nodes[v].kind {
        Kind::Scalar { .. } => {
            let default = scalar_value(v, errors)?;
            return Some(Decl {
                param: Parameter {
                    name: name.into(),
                    default: default.clone(),
                    values: vec![default],
                },
                key,
                value_nodes: vec![v],
            });
        }
        Kind::Map(entries) => entries.clone(),
        Kind::Seq(_) => {
            errors.push((
                v,
                format!(
                    "parameter `{name}` must be a map such as `{{ default: 2, values: [1, 2, 8] }}` \
                     (the list goes under `values`)"
                ),
            ));
            return None;
        }
    };
    let mut default = None;
    let mut values: Option<(Vec<String>, Vec<NodeId>)> = None;
    let mut ok = true;
    for (fk, fv) in entries {
        match tree.scalar(fk) {
            Some("default") => default = Some((fv, scalar_value(fv, errors))),
            Some(field @ ("values" | "range")) => {
                if values.is_some() {
                    errors.push((
                        fk,
                        format!("parameter `{name}` has both `values` and `range`; give one"),
                    ));
                    ok = false;
                    continue;
                }
                let read = if field == "values" {
                    list(tree, name, fv, errors, &scalar_value)
                } else {
                    range(tree, name, fv, errors)
                };
                match read {
                    Some(r) => values = Some(r),
                    None => ok = false,
                }
            }
            other => {
                errors.push((
                    fk,
                    format!(
                        "unknown field `{}` in parameter `{name}`, expected `default`, `values` or `range`",
                        other.unwrap_or("?")
                    ),
                ));
                ok = false;
            }
        }
    }
    let Some((default_node, default)) = default else {
        errors.push((v, format!("missing field `default` in parameter `{name}`")));
        return None;
    };
    let default = default?;
    if !ok {
        return None;
    }
    let (mut list, mut nodes) = values.unwrap_or_default();
    if !list.contains(&default) {
        list.insert(0, default.clone());
        nodes.insert(0, default_node);
    }
    Some(Decl {
        param: Parameter {
            name: name.into(),
            default,
            values: list,
        },
        key,
        value_nodes: nodes,
    })
}

fn list(
    tree: &Tree,
    name: &str,
    node: NodeId,
    errors: &mut Errors,
    scalar_value: &dyn Fn(NodeId, &mut Errors) -> Option<String>,
) -> Option<(Vec<String>, Vec<NodeId>)> {
    let Kind::Seq(items) = &tree.nodes[node].kind else {
        errors.push((
            node,
            format!("`values` of parameter `{name}` must be a list such as `[1, 2, 8]`"),
        ));
        return None;
    };
    if items.is_empty() {
        errors.push((
            node,
            format!("`values` of parameter `{name}` lists no value"),
        ));
        return None;
    }
    if items.len() > MAX_VALUES {
        errors.push((
            node,
            format!(
                "parameter `{name}` lists {} values, at most {MAX_VALUES}",
                items.len()
            ),
        ));
        return None;
    }
    let mut values = Vec::new();
    let mut nodes = Vec::new();
    let mut ok = true;
    for &item in items {
        match scalar_value(item, errors) {
            Some(s) if values.contains(&s) => {
                errors.push((
                    item,
                    format!("value `{s}` of parameter `{name}` is listed twice"),
                ));
                ok = false;
            }
            Some(s) => {
                values.push(s);
                nodes.push(item);
            }
            None => ok = false,
        }
    }
    ok.then_some((values, nodes))
}

/// `range: { from: 1, to: 32, step: 4 }`: whole numbers from `from` to at most `to`.
fn range(
    tree: &Tree,
    name: &str,
    node: NodeId,
    errors: &mut Errors,
) -> Option<(Vec<String>, Vec<NodeId>)> {
    let Kind::Map(entries) = &tree.nodes[node].kind else {
        errors.push((node, format!("`range` of parameter `{name}` must be a map such as `{{ from: 1, to: 32, step: 1 }}`")));
        return None;
    };
    let (mut from, mut to, mut step) = (None, None, Some(1u64));
    let mut ok = true;
    for &(k, v) in entries {
        let field = tree.scalar(k).unwrap_or("?");
        let number = match tree.scalar(v).map(str::parse::<u64>) {
            Some(Ok(n)) => n,
            _ => {
                errors.push((
                    v,
                    format!("`range.{field}` of parameter `{name}` must be a whole number"),
                ));
                ok = false;
                continue;
            }
        };
        match field {
            "from" => from = Some(number),
            "to" => to = Some(number),
            "step" => step = Some(number),
            _ => {
                errors.push((k, format!("unknown field `{field}` in `range` of parameter `{name}`, expected `from`, `to` or `step`")));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let (Some(from), Some(to), Some(step)) = (from, to, step) else {
        errors.push((
            node,
            format!("`range` of parameter `{name}` needs `from` and `to`"),
        ));
        return None;
    };
    if step == 0 || from > to {
        errors.push((
            node,
            format!("`range` of parameter `{name}` must have `from` <= `to` and `step` >= 1"),
        ));
        return None;
    }
    let count = (to - from) / step + 1;
    if count > MAX_VALUES as u64 {
        errors.push((
            node,
            format!("`range` of parameter `{name}` has {count} values, at most {MAX_VALUES}"),
        ));
        return None;
    }
    let values: Vec<String> = (0..count).map(|i| (from + i * step).to_string()).collect();
    let nodes = vec![node; values.len()];
    Some((values, nodes))
}

fn is_null(v: &str) -> bool {
    matches!(v, "" | "~" | "null" | "Null" | "NULL")
}

/// The value of every declared parameter (its default unless `overrides` names it), and the
/// overrides of names the scenario does not declare (a matrix may substitute those).
pub(crate) fn effective(decls: &[Decl], overrides: &Setting) -> Setting {
    let mut setting: Setting = decls
        .iter()
        .map(|d| (d.param.name.clone(), d.param.default.clone()))
        .collect();
    setting.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    setting
}

/// What substitution did.
#[derive(Debug, Default)]
pub(crate) struct Substitution {
    /// Name -> the nodes that use it.
    pub uses: BTreeMap<String, Vec<NodeId>>,
    /// Nodes with `${name}` of a name nobody gave a value.
    pub unknown: Vec<(NodeId, String)>,
    /// Node -> the (name, value) pairs substituted into it, for error messages.
    pub notes: HashMap<NodeId, Vec<(String, String)>>,
}

/// Replaces `${name}` by its value in every scalar value below `root` (keys stay as they
/// are), and `$${` by `${`.
pub(crate) fn substitute(tree: &mut Tree, root: NodeId, setting: &Setting) -> Substitution {
    let mut out = Substitution::default();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        match &tree.nodes[id].kind {
            Kind::Seq(items) => todo.extend(items.iter().copied()),
            Kind::Map(entries) => todo.extend(entries.iter().map(|&(_, v)| v)),
            Kind::Scalar { value, .. } => {
                if !value.contains('$') {
                    continue;
                }
                let expanded = expand(value, setting);
                for name in &expanded.used {
                    out.uses.entry(name.clone()).or_default().push(id);
                }
                for name in expanded.unknown {
                    out.unknown.push((id, name));
                }
                if !expanded.used.is_empty() {
                    out.notes.insert(
                        id,
                        expanded
                            .used
                            .iter()
                            .map(|n| (n.clone(), setting[n].clone()))
                            .collect(),
                    );
                }
                let whole = expanded.whole;
                if let Kind::Scalar { value, quoted } = &mut tree.nodes[id].kind {
                    *value = expanded.text;
                    // `"${jobs}"`: a value that is one parameter has the parameter's type, so
                    // a quoted placeholder (needed inside `{ ... }`) can still be a number.
                    if whole {
                        *quoted = false;
                    }
                }
            }
        }
    }
    out
}

struct Expanded {
    text: String,
    used: Vec<String>,
    unknown: Vec<String>,
    /// The text was exactly one known placeholder.
    whole: bool,
}

fn expand(text: &str, setting: &Setting) -> Expanded {
    let mut out = String::with_capacity(text.len());
    let mut used: Vec<String> = Vec::new();
    let mut unknown = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = r;
            continue;
        }
        let placeholder = rest
            .strip_prefix("${")
            .and_then(|r| r.find('}').map(|end| &r[..end]))
            .filter(|name| is_name(name));
        match placeholder {
            Some(name) => {
                match setting.get(name) {
                    Some(v) => {
                        out.push_str(v);
                        if !used.iter().any(|u| u == name) {
                            used.push(name.to_string());
                        }
                    }
                    None => {
                        out.push_str(&rest[..name.len() + 3]);
                        unknown.push(name.to_string());
                    }
                }
                rest = &rest[name.len() + 3..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    let whole = used.len() == 1 && unknown.is_empty() && text.trim() == format!("${{{}}}", used[0]);
    Expanded {
        text: out,
        used,
        unknown,
        whole,
    }
}

/// Sets `vm.<field>` (for the reserved `cpus` and `memory`) to `value` in the tree, unless
/// the text uses `${<field>}` itself. A declared parameter must not meet a written value;
/// an override (not declared) replaces it.
pub(crate) fn set_vm_field(
    tree: &mut Tree,
    root: NodeId,
    field: &str,
    value: &str,
    declared_at: Option<NodeId>,
    errors: &mut Errors,
) -> Option<NodeId> {
    let span = declared_at.map_or(tree.nodes[root].span, |n| tree.nodes[n].span);
    let vm = match entry(tree, root, "vm") {
        Some(vm) => vm,
        None => add_entry(tree, root, "vm", Kind::Map(Vec::new()), span)?,
    };
    if let Kind::Scalar {
        value,
        quoted: false,
    } = &tree.nodes[vm].kind
    {
        if is_null(value) {
            tree.nodes[vm].kind = Kind::Map(Vec::new());
        }
    }
    if !matches!(tree.nodes[vm].kind, Kind::Map(_)) {
        // Not a map: deserialization says so.
        return None;
    }
    let scalar = Kind::Scalar {
        value: value.into(),
        quoted: false,
    };
    match entry(tree, vm, field) {
        Some(written) if declared_at.is_some() => {
            errors.push((
                written,
                format!(
                    "`vm.{field}` is set by parameter `{field}`; write `{field}: ${{{field}}}` \
                     or leave it out"
                ),
            ));
            None
        }
        Some(written) => {
            tree.nodes[written].kind = scalar;
            Some(written)
        }
        None => add_entry(tree, vm, field, scalar, span),
    }
}

/// The reserved `filesystem` supplies `filesystem.type` when the scenario's `filesystem` map
/// leaves it out (the documented form: `filesystem: { device: scratch }`); a written type is
/// replaced later, on the scenario, by [`set_filesystem`]. Returns the node added.
pub(crate) fn fill_filesystem_type(
    tree: &mut Tree,
    root: NodeId,
    value: &str,
    declared_at: Option<NodeId>,
) -> Option<NodeId> {
    let fs = entry(tree, root, "filesystem")?;
    if !matches!(tree.nodes[fs].kind, Kind::Map(_)) || entry(tree, fs, "type").is_some() {
        return None;
    }
    let span = declared_at.map_or(tree.nodes[root].span, |n| tree.nodes[n].span);
    let scalar = Kind::Scalar {
        value: value.into(),
        quoted: true,
    };
    add_entry(tree, fs, "type", scalar, span)
}

/// The value of `key` in the map `map`.
pub(crate) fn entry(tree: &Tree, map: NodeId, key: &str) -> Option<NodeId> {
    match &tree.nodes[map].kind {
        Kind::Map(entries) => entries
            .iter()
            .find(|(k, _)| tree.scalar(*k) == Some(key))
            .map(|&(_, v)| v),
        _ => None,
    }
}

/// Takes every `key` entry out of the map `map` (the nodes stay, for their positions);
/// returns their (key, value) nodes in file order.
pub(crate) fn take_entries(tree: &mut Tree, map: NodeId, key: &str) -> Vec<(NodeId, NodeId)> {
    let Kind::Map(entries) = &tree.nodes[map].kind else {
        return Vec::new();
    };
    let (taken, kept): (Vec<_>, Vec<_>) = entries
        .iter()
        .partition(|(k, _)| tree.scalar(*k) == Some(key));
    tree.nodes[map].kind = Kind::Map(kept);
    taken
}

fn add_entry(tree: &mut Tree, map: NodeId, key: &str, value: Kind, span: Span) -> Option<NodeId> {
    tree.add_entry(map, key, value)?;
    // Point at what set it (the parameter's declaration), not at the map.
    let Kind::Map(entries) = &tree.nodes[map].kind else {
        return None;
    };
    let &(k, v) = entries.last()?;
    tree.nodes[k].span = span;
    tree.nodes[v].span = span;
    debug_assert!(matches!(tree.nodes[v].role, Role::Value { .. }));
    Some(v)
}

/// mkfs flags that overwrite an existing filesystem without asking, per type.
pub fn mkfs_overwrite_options(fstype: &str) -> Vec<String> {
    let flags: &[&str] = match fstype {
        "xfs" | "btrfs" | "f2fs" => &["-f"],
        "ext2" | "ext3" | "ext4" => &["-F", "-q"],
        _ => &[],
    };
    flags.iter().map(|f| f.to_string()).collect()
}

/// The reserved `filesystem`: replaces the filesystem type and, when it changes, the mkfs
/// options by the new type's "overwrite quietly" flags and a kconfig fragment `fs-<old>` by
/// `fs-<new>`. `Err` when the scenario has no `filesystem`.
pub(crate) fn set_filesystem(s: &mut Scenario, fstype: &str) -> Result<(), ()> {
    let fs = s.filesystem.as_mut().ok_or(())?;
    // The scenario's own type keeps its own (possibly tuned) mkfs options.
    if fs.fstype == fstype {
        return Ok(());
    }
    let old = std::mem::replace(&mut fs.fstype, fstype.to_string());
    fs.mkfs_options = mkfs_overwrite_options(fstype);
    // Scenarios name the fragment that enables their filesystem `fs-<type>`.
    let old_fragment = format!("fs-{old}");
    for fragment in s.kconfig.iter_mut().filter(|k| **k == old_fragment) {
        *fragment = format!("fs-{fstype}");
    }
    let steps = s
        .setup
        .iter_mut()
        .chain(s.steps.iter_mut())
        .chain(s.cleanup.iter_mut());
    for step in steps {
        if let Step::Mkfs(m) = step {
            if m.fstype.as_deref() == Some(old.as_str()) {
                m.fstype = Some(fstype.to_string());
                if m.options.is_some() {
                    m.options = Some(mkfs_overwrite_options(fstype));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(pairs: &[(&str, &str)]) -> Setting {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_known_names_escapes_and_leaves_the_shell_alone() {
        let s = setting(&[("jobs", "12"), ("load-time", "1s")]);
        let e = expand("fio --numjobs=${jobs} ${HOME} $${i} ${nope} $x ${jobs", &s);
        assert_eq!(e.text, "fio --numjobs=12 ${HOME} ${i} ${nope} $x ${jobs");
        assert_eq!(e.used, ["jobs"]);
        assert_eq!(e.unknown, ["nope"]);
        assert!(!e.whole);
        let whole = expand("${load-time}", &s);
        assert_eq!((whole.text.as_str(), whole.whole), ("1s", true));
        assert_eq!(expand("a$", &s).text, "a$");
        assert_eq!(expand("é${jobs}é", &s).text, "é12é");
    }

    #[test]
    fn names_and_values() {
        assert!(is_name("jobs") && is_name("load-time") && is_name("x_2"));
        assert!(!is_name("Jobs") && !is_name("2x") && !is_name("") && !is_name("HOME"));
        assert!(!is_name(&"a".repeat(MAX_NAME_LEN + 1)));
        assert!(check_value("1s").is_ok());
        assert_eq!(check_value(" ").unwrap_err(), "is empty");
        assert!(check_value("a\nb").is_err());
        assert!(check_value("${x}").is_err());
        assert!(check_value(&"9".repeat(MAX_VALUE_LEN + 1)).is_err());
    }
}
