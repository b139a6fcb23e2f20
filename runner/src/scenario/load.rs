//! Loading a scenario: YAML text to a validated [`Scenario`], with every problem reported at
//! once as `path:line:column: message`, the source line and a caret.
//!
//! All problems are found in one go by the YAML layer (`crate::yaml`: a tree that keeps
//! positions, deserialized again with each failed node dropped). Parameters are substituted
//! into the tree first; semantic validation then runs on what was read, skipping checks that
//! depend on a dropped part.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::model::{Scenario, Setting};
use super::params::{self, set_filesystem, Decl, RESERVED};
use super::validate::{self, Partial, PathSeg};
use crate::yaml::{self, Kind, NodeId, ReadError, Seg, Severity, Tree};

pub use crate::yaml::{Diagnostic, Diagnostics};

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("read scenario {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// The scenario has problems; Display prints every one and a count line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A scenario that loaded, and the warnings it produced (print them; they do not fail a run).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    pub warnings: Diagnostics,
}

/// Reads, parses and validates the scenario at `path`, with its parameters' defaults.
/// Warnings are dropped; use [`load_file_with_warnings`] to show them.
pub fn load_file(path: &Path) -> Result<Scenario, LoadError> {
    load_file_with_warnings(path).map(|l| l.scenario)
}

/// Parses and validates scenario text; `origin` names it in messages (usually the path).
pub fn load_str(text: &str, origin: &str) -> Result<Scenario, LoadError> {
    load_str_with_warnings(text, origin).map(|l| l.scenario)
}

pub fn load_file_with_warnings(path: &Path) -> Result<Loaded, LoadError> {
    load_with(path, &Setting::new())
}

pub fn load_str_with_warnings(text: &str, origin: &str) -> Result<Loaded, LoadError> {
    load_str_with(text, origin, &Setting::new())
}

/// Loads the scenario at `path` with `overrides` for its parameters (`--param`, a matrix
/// cell's values): a name the scenario neither declares nor uses is an error, and so is a
/// value that does not fit where it is substituted.
pub fn load_with(path: &Path, overrides: &Setting) -> Result<Loaded, LoadError> {
    let text = read(path)?;
    load_str_with(&text, &path.display().to_string(), overrides)
}

pub fn load_str_with(text: &str, origin: &str, overrides: &Setting) -> Result<Loaded, LoadError> {
    load_text(
        text,
        origin,
        Mode::Source {
            overrides,
            try_values: true,
        },
    )
}

/// Loads a scenario crashrig recorded as it ran (`scenario.yaml` in a run directory): its
/// parameters are already substituted, so `${` is read as it stands.
pub fn load_recorded(path: &Path) -> Result<Loaded, LoadError> {
    let text = read(path)?;
    load_text(&text, &path.display().to_string(), Mode::Recorded)
}

fn read(path: &Path) -> Result<String, LoadError> {
    yaml::read_text(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    /// A file as a user wrote it: `parameters` and `${name}` are read.
    Source {
        overrides: &'a Setting,
        /// Load once more with each declared value, to report the ones that do not fit.
        try_values: bool,
    },
    Recorded,
}

fn load_text(text: &str, origin: &str, mode: Mode) -> Result<Loaded, LoadError> {
    let mut diags = Diagnostics::new(origin);
    let Some((mut tree, root)) =
        yaml::parse_map(text, &mut diags, "scenario", "`name` and `steps`")
    else {
        return Err(LoadError::Invalid(diags));
    };
    tree.step_sections = &SECTIONS;

    let params = match mode {
        Mode::Source { overrides, .. } => read_parameters(&mut tree, root, overrides),
        Mode::Recorded => Params::default(),
    };
    let note = |node: NodeId, message: String| match params.notes.get(&node) {
        Some(pairs) => {
            let pairs: Vec<String> = pairs
                .iter()
                .map(|(n, v)| format!("`{n}` = `{v}`"))
                .collect();
            format!("{message} (with {})", pairs.join(", "))
        }
        None => message,
    };
    for (node, message) in &params.errors {
        diags.push(text, Severity::Error, tree.span(*node), message.clone());
    }
    for (node, name, message) in &params.unknown_names {
        let span = tree.span(*node);
        let placeholder = format!("${{{name}}}");
        // The placeholder's own line and column, within the lines of its scalar.
        let found = (span.start.line()..=span.end.line().max(span.start.line())).find_map(|l| {
            let line = text.split('\n').nth(l.checked_sub(1)?)?;
            let at = line.find(&placeholder)?;
            Some((l, line[..at].chars().count() + 1))
        });
        match found {
            Some((line, column)) => diags.push_at(
                text,
                Severity::Error,
                line,
                column,
                placeholder.chars().count(),
                message.clone(),
            ),
            None => diags.push(text, Severity::Error, span, message.clone()),
        }
    }

    let read = read_scenario(&mut tree, root);
    for (node, message) in &read.errors {
        // `${nope}` was reported as unknown; that it is no duration follows from it.
        if !params.unknown.contains(node) {
            diags.push(
                text,
                Severity::Error,
                tree.span(*node),
                note(*node, message.clone()),
            );
        }
    }
    let Some(mut scenario) = read.scenario else {
        diags.sort();
        return Err(LoadError::Invalid(diags));
    };
    if let Some(fstype) = params.setting.get("filesystem") {
        // A `filesystem` that is there but could not be read has its own error already.
        if set_filesystem(&mut scenario, fstype).is_err() && !read.partial.filesystem {
            let at = params
                .declared_at
                .get("filesystem")
                .copied()
                .unwrap_or(root);
            diags.push(
                text,
                Severity::Error,
                tree.span(at),
                format!(
                    "parameter `filesystem` = `{fstype}` sets the filesystem type, but the \
                     scenario declares no `filesystem`"
                ),
            );
        }
    }
    for problem in validate::check(&scenario, &read.partial, &validate::HostLimits::of_host()) {
        let path: Vec<Seg> = problem
            .path
            .iter()
            .map(|s| match s {
                PathSeg::Key(k) => Seg::Key(k.to_string()),
                PathSeg::Index(i) => Seg::Index(*i),
            })
            .collect();
        let node = tree.locate(&path, &read.removed).unwrap_or(root);
        diags.push(
            text,
            problem.severity,
            tree.span(node),
            note(node, problem.message),
        );
    }
    if diags.error_count() == 0 {
        if let Mode::Source {
            overrides,
            try_values: true,
        } = mode
        {
            try_values(text, origin, overrides, &params, &tree, &mut diags);
        }
    }
    diags.sort();
    if diags.error_count() > 0 {
        return Err(LoadError::Invalid(diags));
    }
    scenario.parameters = params.decls.into_iter().map(|d| d.param).collect();
    scenario.setting = params.setting;
    Ok(Loaded {
        scenario,
        warnings: diags,
    })
}

/// The parameters of a scenario as the loader reads them.
#[derive(Default)]
struct Params {
    decls: Vec<Decl>,
    setting: Setting,
    errors: Vec<(NodeId, String)>,
    /// Nodes with a `${name}` of an unknown name.
    unknown: HashSet<NodeId>,
    /// (node, name, message) of each unknown `${name}`: shown at the placeholder itself.
    unknown_names: Vec<(NodeId, String, String)>,
    /// Node -> (name, value) substituted into it.
    notes: std::collections::HashMap<NodeId, Vec<(String, String)>>,
    /// Parameter name -> its declaration's key node.
    declared_at: std::collections::HashMap<String, NodeId>,
}

/// Takes `parameters` out of the tree, substitutes the setting into it and sets the
/// reserved fields; every problem is collected, none stops the load.
fn read_parameters(tree: &mut Tree, root: NodeId, overrides: &Setting) -> Params {
    let mut p = Params::default();
    let taken = params::take_entries(tree, root, "parameters");
    let mut broken = Vec::new();
    for (i, &(k, v)) in taken.iter().enumerate() {
        if i == 0 {
            (p.decls, broken) = params::declarations(tree, v, &mut p.errors);
        } else {
            p.errors.push((k, "duplicate field `parameters`".into()));
        }
    }
    let section = taken.first().map_or(root, |&(k, _)| k);
    p.declared_at = p
        .decls
        .iter()
        .map(|d| (d.param.name.clone(), d.key))
        .collect();
    let mut overrides = overrides.clone();
    for (name, value) in std::mem::take(&mut overrides) {
        let at = p.declared_at.get(&name).copied().unwrap_or(section);
        if !params::is_name(&name) {
            p.errors.push((
                at,
                format!("`{name}` given a value is not a parameter name (lowercase letters, digits, `-`, `_`)"),
            ));
        } else if let Err(why) = params::check_value(&value) {
            p.errors.push((
                at,
                format!("value `{value}` given for parameter `{name}` {why}"),
            ));
        } else {
            overrides.insert(name, value);
        }
    }
    p.setting = params::effective(&p.decls, &overrides);
    let sub = params::substitute(tree, root, &p.setting);
    for (node, name) in &sub.unknown {
        p.unknown.insert(*node);
        if broken.contains(name) {
            continue;
        }
        p.unknown_names.push((
            *node,
            name.clone(),
            format!(
                "unknown parameter `${{{name}}}`: declare it under `parameters:`, or write \
                 `$${{{name}}}` for a literal `${{{name}}}`"
            ),
        ));
    }
    for d in &p.decls {
        let name = &d.param.name;
        if !sub.uses.contains_key(name) && !RESERVED.contains(&name.as_str()) {
            p.errors.push((
                d.key,
                format!("parameter `{name}` is declared but never used: write `${{{name}}}` where its value goes"),
            ));
        }
    }
    let declared: Vec<String> = p
        .decls
        .iter()
        .map(|d| format!("`{}`", d.param.name))
        .collect();
    for name in overrides.keys() {
        if !p.declared_at.contains_key(name)
            && !broken.contains(name)
            && !sub.uses.contains_key(name)
            && !RESERVED.contains(&name.as_str())
        {
            p.errors.push((
                section,
                format!(
                    "a value is given for parameter `{name}`, but the scenario neither declares \
                     nor uses it ({})",
                    if declared.is_empty() {
                        "it declares no parameters".to_string()
                    } else {
                        format!("it declares {}", declared.join(", "))
                    }
                ),
            ));
        }
    }
    p.notes = sub.notes;
    for field in ["cpus", "memory"] {
        let Some(value) = p.setting.get(field).cloned() else {
            continue;
        };
        if sub.uses.contains_key(field) {
            continue;
        }
        let declared_at = p.declared_at.get(field).copied();
        if let Some(node) =
            params::set_vm_field(tree, root, field, &value, declared_at, &mut p.errors)
        {
            p.notes.insert(node, vec![(field.to_string(), value)]);
        }
    }
    if let Some(value) = p.setting.get("filesystem").cloned() {
        let declared_at = p.declared_at.get("filesystem").copied();
        if let Some(node) = params::fill_filesystem_type(tree, root, &value, declared_at) {
            p.notes
                .insert(node, vec![("filesystem".to_string(), value)]);
        }
    }
    p
}

/// Loads the text once with each declared value that the load did not use and reports,
/// at the value, those that make the scenario fail.
fn try_values(
    text: &str,
    origin: &str,
    overrides: &Setting,
    params: &Params,
    tree: &Tree,
    diags: &mut Diagnostics,
) {
    for d in &params.decls {
        let name = &d.param.name;
        for (value, &node) in d.param.values.iter().zip(&d.value_nodes) {
            if params.setting.get(name) == Some(value) {
                continue;
            }
            let mut trial = overrides.clone();
            trial.insert(name.clone(), value.clone());
            let mode = Mode::Source {
                overrides: &trial,
                try_values: false,
            };
            if let Err(LoadError::Invalid(found)) = load_text(text, origin, mode) {
                if let Some(first) = found.items.iter().find(|i| i.severity == Severity::Error) {
                    diags.push(
                        text,
                        Severity::Error,
                        tree.span(node),
                        format!(
                            "with `{name}` = `{value}` the scenario does not load: {}:{}: {}",
                            first.line, first.column, first.message
                        ),
                    );
                }
            }
        }
    }
}

struct Read {
    scenario: Option<Scenario>,
    errors: Vec<(NodeId, String)>,
    removed: HashSet<NodeId>,
    partial: Partial,
}

/// Reads the scenario with every problem (see `crate::yaml`), and what validation must know
/// about the parts that were dropped.
fn read_scenario(tree: &mut Tree, root: NodeId) -> Read {
    let name = Kind::Scalar {
        value: String::new(),
        quoted: true,
    };
    let required = [("name", name), ("steps", Kind::Seq(Vec::new()))];
    let yaml::Collected {
        value: scenario,
        errors,
        removed,
        placeholders,
    } = yaml::deserialize_all::<Scenario>(tree, root, &required);
    let mut partial = Partial::default();
    for &r in &removed {
        // Which kinds of step were left out: a kill is only "without spawn" if no spawn was.
        let kinds: Vec<String> = match tree.path(r).as_slice() {
            [Seg::Key(s), _] if is_section(s) => match &tree.nodes[r].kind {
                Kind::Scalar { value, .. } => vec![value.clone()],
                Kind::Map(entries) if !entries.is_empty() => entries
                    .iter()
                    .map(|(k, _)| tree.scalar(*k).unwrap_or("?").to_string())
                    .collect(),
                _ => vec!["?".into()],
            },
            [Seg::Key(s), _, Seg::Key(kind)] if is_section(s) => vec![kind.clone()],
            [Seg::Key(s)] if is_section(s) => vec!["?".into()],
            _ => continue,
        };
        partial.dropped_steps.extend(kinds);
    }
    let dropped = removed
        .iter()
        .map(|&r| tree.path(r))
        .chain(placeholders.iter().map(|p| vec![Seg::Key(p.to_string())]));
    for path in dropped {
        match path.as_slice() {
            [Seg::Key(section), Seg::Index(i), _, field, ..] => {
                // A field of a step fell back to its default: the step is still there, but
                // its own checks of that field would complain about the default.
                if let Some(live) = live_index(tree, &removed, section, *i) {
                    let field = match field {
                        Seg::Key(f) => f.clone(),
                        Seg::Index(_) => "?".into(),
                    };
                    partial
                        .damaged_steps
                        .entry((section.clone(), live))
                        .or_default()
                        .insert(field);
                }
            }
            [Seg::Key(k), ..] => match k.as_str() {
                "name" => partial.name = true,
                "devices" => partial.devices = true,
                "filesystem" => partial.filesystem = true,
                "steps" => partial.steps = true,
                _ => {}
            },
            _ => {}
        }
    }
    Read {
        scenario,
        errors,
        removed,
        partial,
    }
}

/// The top-level lists of steps.
const SECTIONS: [&str; 3] = ["setup", "steps", "cleanup"];

fn is_section(key: &str) -> bool {
    SECTIONS.contains(&key)
}

/// The index in the loaded list of element `index` of the list at top-level key `section`.
fn live_index(
    tree: &Tree,
    removed: &HashSet<NodeId>,
    section: &str,
    index: usize,
) -> Option<usize> {
    let seq = tree.locate(&[Seg::Key(section.to_string())], removed)?;
    match &tree.nodes[seq].kind {
        Kind::Seq(items) => {
            let item = *items.get(index)?;
            if removed.contains(&item) {
                return None;
            }
            Some(
                items[..index]
                    .iter()
                    .filter(|e| !removed.contains(e))
                    .count(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::scenario::model::*;

    /// Strips the indentation of the first non-empty line from every line, so YAML and
    /// expected messages can be written indented in the test.
    fn dedent(s: &str) -> String {
        let s = s.strip_prefix('\n').unwrap_or(s).trim_end();
        let indent = s
            .lines()
            .find(|l| !l.trim().is_empty())
            .map_or(0, |l| l.len() - l.trim_start().len());
        let mut out: String = s
            .lines()
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out
    }

    fn errors(yaml: &str) -> String {
        match load_str(&dedent(yaml), "t.yaml") {
            Ok(s) => panic!("expected errors, loaded {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_errors(yaml: &str, want: &str) {
        let got = errors(yaml);
        let want = dedent(want);
        assert_eq!(
            got,
            want.trim_end(),
            "\n--- got ---\n{got}\n--- want ---\n{want}"
        );
    }

    const HEAD: &str = "
        name: t
        devices: [{ name: scratch, size: 2G }]
        filesystem: { type: xfs }
    ";

    fn with_head(rest: &str) -> String {
        dedent(HEAD) + &dedent(rest)
    }

    #[test]
    fn unknown_field_names_the_step_and_the_fields_it_has() {
        assert_errors(
            &with_head(
                "
                steps:
                  - umount: { id: umount, retires: 10s }
                ",
            ),
            "
            t.yaml:5:27: unknown field `retires` in umount step, expected one of `id`, `mountpoint`, `force`, `detach`, `retry`, `expect`
              |
            5 |   - umount: { id: umount, retires: 10s }
              |                           ^^^^^^^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn a_bad_value_in_a_step_hides_none_of_its_other_problems() {
        // `size` does not parse; `files: 0` is still reported, and the checks that would
        // complain about the default `size` stands in for are not.
        assert_errors(
            &with_head(
                "
                steps:
                  - mount
                  - write-data: { files: 0, size: 2GB }
                ",
            ),
            "
            t.yaml:6:26: `files` must be at least 1
              |
            6 |   - write-data: { files: 0, size: 2GB }
              |                          ^

            t.yaml:6:35: invalid size `2GB` for `size` in write-data step, expected a size such as 4096, 64K or 4G
              |
            6 |   - write-data: { files: 0, size: 2GB }
              |                                   ^^^

            error: 2 problems in t.yaml
            ",
        );
    }

    #[test]
    fn unplug_and_replug_of_an_unknown_filesystem_device_name_no_empty_device() {
        // The filesystem's device is not declared (said once), so the steps' default device
        // is unknown: no "replug of ``" or "unplug of ``" follows from it.
        assert_errors(
            "name: t\ndevices: [{ name: scratch, size: 1G }]\n\
             filesystem: { type: xfs, device: nodev }\nsteps:\n  - replug\n  - unplug\n  - unplug\n",
            "
            t.yaml:3:34: unknown device `nodev` (declared: `scratch`)
              |
            3 | filesystem: { type: xfs, device: nodev }
              |                                  ^^^^^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        assert_errors(
            "
            name: t
            iterations: x
            steps: [sync]
            ",
            "
            t.yaml:2:13: invalid type: string \"x\", expected u32 for `iterations`
              |
            2 | iterations: x
              |             ^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn bad_duration_and_bad_errno_are_reported_at_the_value() {
        assert_errors(
            &with_head(
                "
                steps:
                  - umount: { retry: ten, expect: EBUSSY }
                  - mount: { expect: [ok, ebusy] }
                ",
            ),
            "
            t.yaml:5:22: invalid duration `ten` for `retry` in umount step, expected a number with a unit such as 500ms, 2s or 1m
              |
            5 |   - umount: { retry: ten, expect: EBUSSY }
              |                      ^^^

            t.yaml:5:35: unknown outcome `EBUSSY` for `expect` in umount step, expected `ok`, `any` or an errno name such as `EBUSY`
              |
            5 |   - umount: { retry: ten, expect: EBUSSY }
              |                                   ^^^^^^

            t.yaml:6:27: unknown outcome `ebusy` for `expect[1]` in mount step, expected `EBUSY` (errno names are upper case)
              |
            6 |   - mount: { expect: [ok, ebusy] }
              |                           ^^^^^

            error: 3 problems in t.yaml
            ",
        );
    }

    #[test]
    fn undeclared_device_lists_the_declared_ones() {
        assert_errors(
            &with_head(
                "
                steps:
                  - mount: { device: scrach }
                ",
            ),
            "
            t.yaml:5:22: unknown device `scrach` (declared: `scratch`)
              |
            5 |   - mount: { device: scrach }
              |                      ^^^^^^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn kill_without_spawn() {
        assert_errors(
            &with_head(
                "
                steps:
                  - mount: {}
                  - kill: { name: load }
                  - spawn: { name: load, command: fio }
                ",
            ),
            "
            t.yaml:6:19: kill step names `load`, but no spawn step before it starts `load`
              |
            6 |   - kill: { name: load }
              |                   ^^^^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn every_problem_in_a_file_is_reported_at_once() {
        assert_errors(
            "
            name: many
            iterations: x
            vm: { memory: 128M }
            devices: [{ name: scratch, size: 2G }]
            filesystem: { type: xfs, device: scratch }
            steps:
              - mount: { device: other }
              - spawn: { name: load, command: fio }
              - sleep: 1x
              - kill: { name: lod }
              - umount: { id: umount, retires: 10s }
              - mout: {}
              - umount: { id: umount }
            dmesg: { fail-on: [warning, oopss] }
            ",
            "
            t.yaml:2:13: invalid type: string \"x\", expected u32 for `iterations`
              |
            2 | iterations: x
              |             ^

            t.yaml:3:15: `vm.memory` is 128M, at least 256M is needed
              |
            3 | vm: { memory: 128M }
              |               ^^^^

            t.yaml:7:22: unknown device `other` (declared: `scratch`)
              |
            7 |   - mount: { device: other }
              |                      ^^^^^

            t.yaml:9:12: invalid duration `1x` for sleep step, expected a number with a unit such as 500ms, 2s or 1m
              |
            9 |   - sleep: 1x
              |            ^^

            t.yaml:10:19: kill step names `lod`, but no spawn step before it starts `lod`
               |
            10 |   - kill: { name: lod }
               |                   ^^^

            t.yaml:11:27: unknown field `retires` in umount step, expected one of `id`, `mountpoint`, `force`, `detach`, `retry`, `expect`
               |
            11 |   - umount: { id: umount, retires: 10s }
               |                           ^^^^^^^

            t.yaml:12:5: unknown step kind `mout`, expected one of `mkfs`, `mount`, `umount`, `spawn`, `kill`, `run`, `sleep`, `shutdown`, `sync`, `dm-error`, `dm-flakey`, `dm-restore`, `fsck`, `write-data`, `verify-data`, `power-cut`, `panic`, `reboot`, `unplug`, `replug`
               |
            12 |   - mout: {}
               |     ^^^^

            t.yaml:13:19: duplicate step id `umount` (already used by a umount step in `steps`)
               |
            13 |   - umount: { id: umount }
               |                   ^^^^^^

            t.yaml:14:29: unknown finding kind `oopss`, expected `all`, `none` or one of `warning`, `bug`, `oops`, `panic`, `kasan`, `lockdep`, `hung-task`, `rcu-stall`, `soft-lockup`, `fs-corruption`, `fs-error`
               |
            14 | dmesg: { fail-on: [warning, oopss] }
               |                             ^^^^^

            error: 9 problems in t.yaml
            ",
        );
    }

    #[test]
    fn a_field_that_failed_does_not_cause_follow_up_errors() {
        // `min` is dropped after its error; the sleep must not also be reported as
        // having `max` without `min`, nor the kill as lacking its spawn.
        assert_errors(
            &with_head(
                "
                steps:
                  - spawn: { name: [load], command: fio }
                  - sleep: { min: 1x, max: 2s }
                  - kill: { name: load }
                ",
            ),
            "
            t.yaml:5:20: invalid type: sequence, expected a string for `name` in spawn step
              |
            5 |   - spawn: { name: [load], command: fio }
              |                    ^

            t.yaml:6:19: invalid duration `1x` for `min` in sleep step, expected a number with a unit such as 500ms, 2s or 1m
              |
            6 |   - sleep: { min: 1x, max: 2s }
              |                   ^^

            error: 2 problems in t.yaml
            ",
        );
    }

    #[test]
    fn missing_required_fields_are_reported_together() {
        assert_errors(
            "iterations: 3\n",
            "
            t.yaml:1:1: missing field `name`
              |
            1 | iterations: 3
              | ^

            t.yaml:1:1: missing field `steps`
              |
            1 | iterations: 3
              | ^

            error: 2 problems in t.yaml
            ",
        );
    }

    #[test]
    fn an_empty_file() {
        assert_errors(
            "# nothing here\n",
            "
            t.yaml:1:1: empty scenario: expected a map with at least `name` and `steps`
              |
            1 | # nothing here
              | ^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn a_list_is_not_a_scenario() {
        assert_errors(
            "- mount\n",
            "
            t.yaml:1:1: a scenario is a map with at least `name` and `steps`
              |
            1 | - mount
              | ^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn yaml_syntax_error_points_at_the_text() {
        assert_errors(
            "
            name: t
            steps:
              - mount: {}
             - umount: {}
            ",
            "
            t.yaml:4:2: while parsing a block mapping, did not find expected key
              |
            4 |  - umount: {}
              |  ^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn tabs_are_shown_as_spaces_and_the_caret_follows() {
        assert_errors(
            "name: t\nsteps: [sync]\niterations:\t\"x\"\n",
            "
            t.yaml:3:13: invalid type: string \"x\", expected u32 for `iterations`
              |
            3 | iterations:    \"x\"
              |                ^^^

            error: 1 problem in t.yaml
            ",
        );
    }

    #[test]
    fn unknown_filesystem_type_is_a_warning() {
        let loaded = load_str_with_warnings(
            "name: t\ndevices: [{ name: d, size: 1G }]\nfilesystem: { type: zfs }\nsteps: [mount]\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(
            loaded.warnings.to_string(),
            dedent(
                "
                t.yaml:3:21: warning: filesystem type `zfs` is not in the default guest image (it has xfs, ext4 and btrfs); add mkfs.zfs through the image recipe
                  |
                3 | filesystem: { type: zfs }
                  |                     ^^^

                warning: 1 warning in t.yaml
                "
            )
            .trim_end()
        );
        assert_eq!(loaded.scenario.filesystem.unwrap().fstype, "zfs");
    }

    #[test]
    fn unreadable_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.yaml");
        let err = load_file(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("read scenario {}", missing.display())
        );
        assert!(matches!(err, LoadError::Read { .. }));

        let binary = dir.path().join("binary.yaml");
        std::fs::write(&binary, b"name: \xff\n").unwrap();
        let err = load_file(&binary).unwrap_err();
        assert_eq!(
            format!("{err}: {}", std::error::Error::source(&err).unwrap()),
            format!(
                "read scenario {}: line 1, column 7 is not UTF-8 (byte 0xff); YAML files are UTF-8 text",
                binary.display()
            )
        );
    }

    /// Loads `steps` (YAML list items) under a head with a dm-capable device and returns
    /// the last step.
    fn last_step(steps: &str) -> Step {
        let text = format!(
            "name: t\ndevices: [{{ name: scratch, size: 2G, dm: true }}, {{ name: spare, size: 1G }}]\n\
             filesystem: {{ type: xfs }}\nsteps:\n{steps}"
        );
        match load_str(&text, "t.yaml") {
            Ok(s) => s.steps.last().cloned().unwrap(),
            Err(e) => panic!("{steps} did not load:\n{e}"),
        }
    }

    #[test]
    fn every_step_kind_loads() {
        let s = Duration::from_secs;
        let table: Vec<(&str, Step)> = vec![
            ("  - mkfs: {}\n", Step::Mkfs(MkfsStep::default())),
            (
                "  - mkfs: { id: m, device: spare, type: ext4, options: [-F], expect: any }\n",
                Step::Mkfs(MkfsStep {
                    id: Some("m".into()),
                    device: Some("spare".into()),
                    fstype: Some("ext4".into()),
                    options: Some(vec!["-F".into()]),
                    expect: Expect::One(Outcome::Any),
                }),
            ),
            ("  - mount\n", Step::Mount(MountStep::default())),
            (
                "  - mount: { device: scratch, mountpoint: /m, options: [ro], retry: 10s, expect: [ok, EBUSY] }\n",
                Step::Mount(MountStep {
                    id: None,
                    device: Some("scratch".into()),
                    mountpoint: Some("/m".into()),
                    options: Some(vec!["ro".into()]),
                    retry: Some(s(10)),
                    expect: Expect::Many(vec![Outcome::Ok, Outcome::Errno("EBUSY".into())]),
                }),
            ),
            (
                "  - umount: { id: u, mountpoint: /mnt, force: true, detach: false, retry: 500ms, expect: EBUSY }\n",
                Step::Umount(UmountStep {
                    id: Some("u".into()),
                    mountpoint: Some("/mnt".into()),
                    force: true,
                    detach: false,
                    retry: Some(Duration::from_millis(500)),
                    expect: Expect::One(Outcome::Errno("EBUSY".into())),
                }),
            ),
            (
                "  - spawn: { name: load, command: fio x }\n",
                Step::Spawn(SpawnStep {
                    id: None,
                    name: "load".into(),
                    command: "fio x".into(),
                }),
            ),
            (
                "  - spawn: { name: load, command: fio }\n  - kill: { name: load }\n",
                Step::Kill(KillStep {
                    id: None,
                    name: "load".into(),
                    signal: "KILL".into(),
                    wait: s(60),
                }),
            ),
            (
                "  - spawn: { name: load, command: fio }\n  - kill: { name: load, signal: TERM, wait: 5s }\n",
                Step::Kill(KillStep {
                    id: None,
                    name: "load".into(),
                    signal: "TERM".into(),
                    wait: s(5),
                }),
            ),
            (
                "  - run: { command: 'true' }\n",
                Step::Run(RunStep {
                    id: None,
                    command: "true".into(),
                    timeout: s(60),
                    exit: 0,
                }),
            ),
            (
                "  - run: { command: 'false', timeout: 1m, exit: 1 }\n",
                Step::Run(RunStep {
                    id: None,
                    command: "false".into(),
                    timeout: s(60),
                    exit: 1,
                }),
            ),
            (
                "  - sleep: 2s\n",
                Step::Sleep(SleepStep {
                    time: Some(s(2)),
                    ..SleepStep::default()
                }),
            ),
            (
                "  - sleep: { id: nap, time: 2s }\n",
                Step::Sleep(SleepStep {
                    id: Some("nap".into()),
                    time: Some(s(2)),
                    ..SleepStep::default()
                }),
            ),
            (
                "  - sleep: { min: 1s, max: 3s }\n",
                Step::Sleep(SleepStep {
                    min: Some(s(1)),
                    max: Some(s(3)),
                    ..SleepStep::default()
                }),
            ),
            (
                "  - shutdown: {}\n",
                Step::Shutdown(ShutdownStep {
                    id: None,
                    mountpoint: None,
                    flags: ShutdownFlag::Default,
                    expect: Expect::One(Outcome::Ok),
                }),
            ),
            (
                "  - shutdown: { flags: no-log-flush }\n",
                Step::Shutdown(ShutdownStep {
                    id: None,
                    mountpoint: None,
                    flags: ShutdownFlag::NoLogFlush,
                    expect: Expect::One(Outcome::Ok),
                }),
            ),
            ("  - sync\n", Step::Sync(SyncStep::default())),
            (
                "  - sync: { mountpoint: /mnt }\n",
                Step::Sync(SyncStep {
                    id: None,
                    mountpoint: Some("/mnt".into()),
                }),
            ),
            ("  - dm-error: {}\n", Step::DmError(DmStep::default())),
            (
                "  - dm-flakey: { device: scratch, mode: error-writes }\n",
                Step::DmFlakey(DmFlakeyStep {
                    id: None,
                    device: Some("scratch".into()),
                    mode: FlakeyMode::ErrorWrites,
                }),
            ),
            ("  - dm-restore\n", Step::DmRestore(DmStep::default())),
            (
                "  - fsck: { must-be-clean: false }\n",
                Step::Fsck(FsckStep {
                    id: None,
                    device: None,
                    options: vec![],
                    must_be_clean: false,
                }),
            ),
            (
                "  - fsck: { options: [-l, /dev/vdb] }\n",
                Step::Fsck(FsckStep {
                    id: None,
                    device: None,
                    options: vec!["-l".into(), "/dev/vdb".into()],
                    must_be_clean: true,
                }),
            ),
            (
                "  - write-data: {}\n",
                Step::WriteData(DataStep {
                    id: None,
                    dir: "crashrig-data".into(),
                    files: 16,
                    size: Size(64 << 10),
                    fsync: true,
                }),
            ),
            (
                "  - write-data: { dir: d, files: 2, size: 1M }\n  - verify-data: { dir: d, files: 2, size: 1M, fsync: false }\n",
                Step::VerifyData(DataStep {
                    id: None,
                    dir: "d".into(),
                    files: 2,
                    size: Size(1 << 20),
                    fsync: false,
                }),
            ),
            ("  - power-cut\n", Step::PowerCut(HostStep::default())),
            ("  - power-cut: {}\n", Step::PowerCut(HostStep::default())),
            (
                "  - panic: { id: boom }\n",
                Step::Panic(HostStep {
                    id: Some("boom".into()),
                }),
            ),
            ("  - reboot:\n", Step::Reboot(HostStep::default())),
            ("  - unplug: {}\n", Step::Unplug(PlugStep::default())),
            (
                "  - unplug: { device: spare }\n  - replug: { device: spare }\n",
                Step::Replug(PlugStep {
                    id: None,
                    device: Some("spare".into()),
                }),
            ),
        ];
        let mut kinds = HashSet::new();
        for (yaml, want) in table {
            let got = last_step(yaml);
            assert_eq!(got, want, "{yaml}");
            kinds.insert(got.kind());
        }
        assert_eq!(kinds.len(), 20, "every step kind is covered: {kinds:?}");
    }

    #[test]
    fn top_level_defaults_and_anchors() {
        let s = load_str(
            "name: t\ndevices: [{ name: d, size: 1G }]\nfilesystem: { type: xfs }\n\
             setup: [mkfs]\nsteps: [&m { mount: { retry: 1s } }, umount, *m]\ndmesg: { fail-on: warning }\n",
            "t.yaml",
        )
        .unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.iterations, 20);
        assert_eq!(s.iteration_timeout, Duration::from_secs(300));
        assert_eq!(s.vm.memory, Size(2 << 30));
        assert_eq!(s.vm.cpus, 2);
        let fs = s.filesystem.as_ref().unwrap();
        assert_eq!(
            (fs.device.as_deref(), fs.mountpoint.as_str()),
            (None, "/mnt")
        );
        assert_eq!(s.filesystem_device().map(|d| d.name.as_str()), Some("d"));
        assert_eq!(s.steps[0], s.steps[2]);
        assert_eq!(
            s.dmesg.fail_on,
            FindingSelector::Kinds(vec!["warning".into()])
        );
        assert!(s.dmesg.fail_on.selects("warning") && !s.dmesg.fail_on.selects("bug"));
        assert!(s.cleanup.is_empty());
        assert!(!s.iterations_share_state);
    }

    #[test]
    fn iterations_that_share_state_say_so() {
        let s = load_str(
            "name: t\niterations-share-state: true\nsteps: [sync]\n",
            "t.yaml",
        )
        .unwrap();
        assert!(s.iterations_share_state);
        let e = load_str(
            "name: t\niterations-share-state: 2\nsteps: [sync]\n",
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.yaml:2:"), "{e}");
    }

    #[test]
    fn a_scenario_serialized_as_json_loads_back_unchanged() {
        let original = load_file(&repo_tests().join("seed-shutdown-umount.yaml")).unwrap();
        // JSON is YAML too, and it is how results will carry the scenario.
        let text = serde_json::to_string_pretty(&original).unwrap();
        let again = load_str(&text, "serialized").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, original);
    }

    #[test]
    fn a_flood_of_problems_stops_with_a_note() {
        let mut text = String::from("name: t\nsteps: [sync]\n");
        for i in 0..250 {
            text.push_str(&format!("extra{i}: 1\n"));
        }
        let shown = load_str(&text, "t.yaml").unwrap_err().to_string();
        assert!(
            shown.starts_with("t.yaml:1:1: stopped after 200 problems;"),
            "{shown}"
        );
        assert!(shown.contains("t.yaml:202:1: unknown field `extra199`"));
        assert!(!shown.contains("extra200"));
        assert!(shown.ends_with("error: 201 problems in t.yaml"));
    }

    #[test]
    fn the_format_reference_examples_load() {
        let doc = include_str!("../../../docs/scenario-format.md");
        let mut examples = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let yaml = block.split("```").next().unwrap();
            // Fragments that show only steps get a filesystem to work on.
            let text = if yaml.starts_with("steps:") {
                format!("name: t\ndevices: [{{ name: d, size: 1G }}]\nfilesystem: {{ type: xfs }}\n{yaml}")
            } else {
                yaml.to_string()
            };
            load_str(&text, "docs/scenario-format.md").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            examples += 1;
        }
        assert_eq!(examples, 7);
    }

    fn repo_tests() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests")
    }

    fn yaml_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn shipped_scenarios_load_cleanly() {
        let files = yaml_files(&repo_tests());
        assert!(files.len() >= 5, "{files:?}");
        for path in files {
            let loaded = load_file_with_warnings(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(loaded.warnings.is_empty(), "{}", loaded.warnings);
            let s = loaded.scenario;
            assert!(!s.description.trim().is_empty(), "{}", path.display());
            let stem = path.file_stem().unwrap().to_str().unwrap();
            assert_eq!(s.name, stem, "the name matches the file name");
            assert_eq!(s.iterations, if stem == "smoke" { 3 } else { 20 });
        }
    }

    #[test]
    fn seed_scenarios_say_what_the_issue_asks() {
        let load = |name: &str| load_file(&repo_tests().join(name)).unwrap();
        let seed = load("seed-kill-umount.yaml");
        let kinds: Vec<&str> = seed.steps.iter().map(Step::kind).collect();
        assert_eq!(
            kinds,
            ["mount", "spawn", "run", "sleep", "kill", "umount", "mount", "umount"]
        );
        let Step::Spawn(load_step) = &seed.steps[1] else {
            unreachable!()
        };
        for arg in [
            "--ioengine=io_uring",
            "--thread",
            "--numjobs=12",
            "--iodepth=2",
            "riops=50\" >",
        ] {
            assert!(load_step.command.contains(arg), "{arg}");
        }
        let umount = seed
            .steps
            .iter()
            .find(|s| s.id() == Some("umount"))
            .unwrap();
        let Step::Umount(u) = umount else {
            unreachable!()
        };
        assert_eq!(u.retry, Some(Duration::from_secs(10)));
        assert!(u.expect.allows(None) && !u.expect.allows(Some("EBUSY")));
        let fs = seed.filesystem.as_ref().unwrap();
        assert_eq!(
            (fs.fstype.as_str(), seed.devices[0].size),
            ("xfs", Size(2 << 30))
        );

        let g388 = load("seed-shutdown-umount.yaml");
        let kinds: Vec<&str> = g388.steps.iter().map(Step::kind).collect();
        assert_eq!(
            kinds,
            ["mount", "spawn", "sleep", "shutdown", "kill", "umount", "mount", "umount"]
        );

        let ext4 = load("seed-kill-umount-ext4.yaml");
        let fs = ext4.filesystem.as_ref().unwrap();
        assert_eq!(
            (fs.fstype.as_str(), fs.mkfs_options.as_slice()),
            ("ext4", &["-F".to_string(), "-q".to_string()][..])
        );
        assert_eq!(ext4.steps, seed.steps);

        let control = load("control-psync.yaml");
        let Step::Spawn(c) = &control.steps[1] else {
            unreachable!()
        };
        assert_eq!(
            c.command,
            load_step
                .command
                .replace("--ioengine=io_uring", "--ioengine=psync")
        );
    }

    #[test]
    fn bad_scenarios_fail_with_the_text_in_their_header() {
        let files = yaml_files(&repo_tests().join("bad"));
        assert!(files.len() >= 5, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // The header: comment lines up to the first line that is not one.
            let want: Vec<&str> = text
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with('#'))
                .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
                .collect();
            let origin = format!("tests/bad/{}", path.file_name().unwrap().to_str().unwrap());
            let got = match load_str(&text, &origin) {
                Ok(_) => panic!("{origin} loaded"),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, want.join("\n").trim_end(), "\n{got}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Random edits of a real scenario never panic, and a failure always says where.
        #[test]
        fn mutated_scenarios_never_panic(
            edits in proptest::collection::vec(
                (0usize..4, proptest::num::usize::ANY, proptest::num::usize::ANY,
                 proptest::sample::select(vec![
                     "", " ", "\n", "\t", ":", "- ", "{", "}", "[", "]", ",", "&a ", "*a", "!!str ",
                     "\"", "'", "#", "|", ">", "~", "-1", "99999999999999999999", "x", "é", "\r\n",
                     "  - mount: {}\n", "kill", "umount", "sleep: ", "name: ", "retry: ",
                 ])),
                1..6,
            )
        ) {
            let mut text = std::fs::read_to_string(repo_tests().join("seed-shutdown-umount.yaml")).unwrap();
            for (op, a, b, piece) in edits {
                let chars: Vec<char> = text.chars().collect();
                let n = chars.len().max(1);
                let (a, b) = (a % n, b % n);
                let (lo, hi) = (a.min(b), a.max(b).min(a.min(b) + 40));
                text = match op {
                    // Insert a piece of YAML.
                    0 => chars[..lo].iter().collect::<String>() + piece + &chars[lo..].iter().collect::<String>(),
                    // Delete a short range.
                    1 => chars[..lo].iter().chain(&chars[hi.min(chars.len())..]).collect(),
                    // Duplicate a short range.
                    2 => chars[..hi.min(chars.len())].iter().chain(&chars[lo..]).collect(),
                    // Replace a short range.
                    _ => chars[..lo].iter().collect::<String>() + piece + &chars[hi.min(chars.len())..].iter().collect::<String>(),
                };
            }
            if let Err(e) = load_str(&text, "m.yaml") {
                let shown = e.to_string();
                proptest::prop_assert!(shown.starts_with("m.yaml:"), "{}", shown);
                proptest::prop_assert!(shown.lines().last().unwrap().starts_with("error: "), "{}", shown);
            }
        }
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod params_tests;
