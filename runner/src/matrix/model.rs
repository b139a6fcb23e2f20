//! The matrix file (kernels x scenarios x parameters), loading it with `file:line:column`
//! errors, and its expansion into cells.
//!
//! ```yaml
//! name: seed-6.1-vs-6.12
//! iterations: 20
//! kernels:
//!   - spec: debian:6.1
//!   - { spec: debian-source:6.1, kconfig: [debug], patches: [fix.mbox], label: "6.1+fix" }
//! scenarios: [../seed-kill-umount.yaml]
//! parameters:
//!   filesystem: [xfs, ext4]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::kernel::spec::{KernelSpec, PathKind};
use crate::report::CellInfo;
use crate::yaml::{self, Kind, ReadError, Seg, Severity};

pub use crate::yaml::{Diagnostic, Diagnostics};

#[derive(Debug, Error)]
pub enum MatrixError {
    #[error("read matrix file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// Every problem found, one `file:line:column: message` each, and a count line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// A loaded, validated matrix. Paths are resolved against the matrix file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub name: String,
    /// Iterations per cell; default: each scenario's own `iterations`.
    pub iterations: Option<u32>,
    pub kernels: Vec<MatrixKernel>,
    pub scenarios: Vec<MatrixScenario>,
    /// Parameter name -> values; every combination is a cell. Default: none.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Known-results file to check against; default: none.
    pub baseline: Option<PathBuf>,
    /// Where `baseline` is written in the matrix file (set with it).
    pub baseline_at: Option<Place>,
}

/// A place in the matrix file, so a problem found after loading (reading the baseline the
/// file names) is reported as the loader reports its own: `file:line:column`, the line, a
/// caret.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    origin: String,
    at: Diagnostic,
}

impl Place {
    /// The error `message` at this place.
    pub fn error(&self, message: String) -> MatrixError {
        MatrixError::Invalid(Diagnostics {
            origin: self.origin.clone(),
            items: vec![Diagnostic {
                message,
                ..self.at.clone()
            }],
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatrixKernel {
    /// Parsed, with relative paths resolved against the matrix file's directory.
    pub spec: KernelSpec,
    /// As written in the matrix file.
    pub spec_text: String,
    /// Kernel config fragments for built kernels. Default: none.
    pub kconfig: Vec<String>,
    /// Patch series (mbox, quilt series or directory) for built kernels. Default: none.
    pub patches: Vec<PathBuf>,
    /// Names the kernel in cell ids and reports; default: the spec with `:` and `/` as `-`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatrixScenario {
    /// Resolved against the matrix file's directory.
    pub path: PathBuf,
    /// The file stem; names the scenario in cell ids.
    pub key: String,
}

/// One kernel x scenario x parameter combination.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 0-based position in the expansion order.
    pub index: usize,
    pub kernel: MatrixKernel,
    pub scenario: MatrixScenario,
    /// Parameter name -> value; empty without `parameters`.
    pub params: BTreeMap<String, String>,
    /// Iterations for this cell; `None`: the scenario's own.
    pub iterations: Option<u32>,
    matrix: String,
    digest: String,
    total: usize,
}

impl Cell {
    /// `kernel-label/scenario-key[/name=value,...]`, e.g.
    /// `debian-6.1/seed-kill-umount/filesystem=xfs`.
    pub fn id(&self) -> String {
        cell_id(&self.kernel.label, &self.scenario.key, &self.params)
    }

    /// What the run record of this cell carries (`RunRecord::cell`).
    pub fn info(&self) -> CellInfo {
        CellInfo {
            id: self.id(),
            matrix: self.matrix.clone(),
            digest: self.digest.clone(),
            index: self.index as u32,
            total: self.total as u32,
            kernel: self.kernel.label.clone(),
            scenario: self.scenario.key.clone(),
            params: self.params.clone(),
        }
    }
}

pub(crate) fn cell_id(kernel: &str, scenario: &str, params: &BTreeMap<String, String>) -> String {
    let mut id = format!("{kernel}/{scenario}");
    if !params.is_empty() {
        id.push('/');
        let pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        id.push_str(&pairs.join(","));
    }
    id
}

impl Matrix {
    /// Every cell, in a deterministic order: kernels in file order, then scenarios in file
    /// order, then parameter combinations (names sorted, the last name varying fastest,
    /// values in file order).
    pub fn cells(&self) -> Vec<Cell> {
        let combos = self.combinations();
        let mut cells = Vec::new();
        for kernel in &self.kernels {
            for scenario in &self.scenarios {
                for params in &combos {
                    cells.push(Cell {
                        index: cells.len(),
                        kernel: kernel.clone(),
                        scenario: scenario.clone(),
                        params: params.clone(),
                        iterations: self.iterations,
                        matrix: self.name.clone(),
                        digest: String::new(),
                        total: 0,
                    });
                }
            }
        }
        let mut hasher = Sha256::new();
        for c in &cells {
            hasher.update(c.id().as_bytes());
            hasher.update(b"\n");
        }
        let digest = hex::encode(&hasher.finalize()[..8]);
        let total = cells.len();
        for c in &mut cells {
            c.digest = digest.clone();
            c.total = total;
        }
        cells
    }

    fn combinations(&self) -> Vec<BTreeMap<String, String>> {
        let mut combos = vec![BTreeMap::new()];
        for (name, values) in &self.parameters {
            combos = combos
                .into_iter()
                .flat_map(|base| {
                    values.iter().map(move |v| {
                        let mut c = base.clone();
                        c.insert(name.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        combos
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawMatrix {
    name: String,
    iterations: Option<u32>,
    kernels: Vec<RawKernel>,
    scenarios: Vec<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<ParamValue>>,
    baseline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKernelMap {
    spec: String,
    #[serde(default)]
    kconfig: Vec<String>,
    #[serde(default)]
    patches: Vec<String>,
    label: Option<String>,
}

/// `- debian:6.1` or `- { spec: debian:6.1, label: old }`.
#[derive(Debug)]
struct RawKernel(RawKernelMap);

impl<'de> Deserialize<'de> for RawKernel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawKernel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a kernel spec such as debian:6.1, or a map with `spec`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawKernel, E> {
                Ok(RawKernel(RawKernelMap {
                    spec: v.to_string(),
                    kconfig: Vec::new(),
                    patches: Vec::new(),
                    label: None,
                }))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawKernel, A::Error> {
                RawKernelMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawKernel)
            }
        }
        d.deserialize_any(V)
    }
}

/// A parameter value: YAML strings, numbers and booleans all become their text, so
/// `threads: [1, 12]` works.
#[derive(Debug)]
struct ParamValue(String);

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a parameter value (a string or a number)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads and validates the matrix file at `path`.
pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
    let text = yaml::read_text(path).map_err(|source| MatrixError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    load_str(&text, &path.display().to_string(), base, &PathKind::of)
}

/// Parses and validates matrix text, reporting every problem at once. `origin` names the
/// file in messages; relative paths are resolved against `base`; `kind_of` tells files,
/// directories and missing paths apart (a seam for tests).
pub fn load_str(
    text: &str,
    origin: &str,
    base: &Path,
    kind_of: &dyn Fn(&Path) -> PathKind,
) -> Result<Matrix, MatrixError> {
    let mut diags = Diagnostics::new(origin);
    let needs = "`name`, `kernels` and `scenarios`";
    let Some((mut tree, root)) = yaml::parse_map(text, &mut diags, "matrix", needs) else {
        return Err(MatrixError::Invalid(diags));
    };
    let required = [
        (
            "name",
            Kind::Scalar {
                value: String::new(),
                quoted: true,
            },
        ),
        ("kernels", Kind::Seq(Vec::new())),
        ("scenarios", Kind::Seq(Vec::new())),
    ];
    let mut read = yaml::deserialize_all::<RawMatrix>(&mut tree, root, &required);
    read.report(text, &tree, &mut diags);
    if let Some(raw) = read.value.take() {
        let mut problems: Vec<(Vec<Seg>, String)> = Vec::new();
        let matrix = check(raw, base, kind_of, &mut problems);
        for (path, message) in problems {
            if read.damaged(&tree, &path) {
                continue;
            }
            let node = tree.locate(&path, &read.removed).unwrap_or(root);
            diags.push(text, Severity::Error, tree.span(node), message);
        }
        if diags.error_count() == 0 {
            let mut matrix = matrix;
            if matrix.baseline.is_some() {
                let node = tree
                    .locate(&[key("baseline")], &read.removed)
                    .unwrap_or(root);
                let mut at = Diagnostics::new(origin);
                at.push(text, Severity::Error, tree.span(node), String::new());
                matrix.baseline_at = at.items.pop().map(|at| Place {
                    origin: origin.to_string(),
                    at,
                });
            }
            return Ok(matrix);
        }
    }
    diags.sort();
    Err(MatrixError::Invalid(diags))
}

/// Cells in one matrix at most.
pub const MAX_CELLS: usize = 10_000;

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn check(
    raw: RawMatrix,
    base: &Path,
    kind_of: &dyn Fn(&Path) -> PathKind,
    problems: &mut Vec<(Vec<Seg>, String)>,
) -> Matrix {
    let mut bad = |path: Vec<Seg>, message: String| problems.push((path, message));
    if raw.name.trim().is_empty() {
        bad(vec![key("name")], "`name` must not be empty".into());
    }
    let most = crate::scenario::MAX_ITERATIONS;
    match raw.iterations {
        Some(0) => bad(
            vec![key("iterations")],
            "`iterations` must be at least 1".into(),
        ),
        Some(n) if n > most => bad(
            vec![key("iterations")],
            format!("`iterations` is {n}, at most {most}"),
        ),
        _ => {}
    }
    if raw.kernels.is_empty() {
        bad(vec![key("kernels")], "`kernels` lists no kernel".into());
    }
    if raw.scenarios.is_empty() {
        bad(
            vec![key("scenarios")],
            "`scenarios` lists no scenario".into(),
        );
    }

    let mut kernels = Vec::new();
    let mut labels: BTreeMap<String, usize> = BTreeMap::new();
    for (i, RawKernel(k)) in raw.kernels.into_iter().enumerate() {
        let at = |field: &str| vec![key("kernels"), Seg::Index(i), key(field)];
        let spec = match KernelSpec::parse_with(&k.spec, |p| kind_of(&join_clean(base, p))) {
            Ok(spec) => resolve_spec(spec, base),
            Err(e) => {
                bad(at("spec"), format!("invalid kernel spec: {e}"));
                continue;
            }
        };
        if !spec.is_built() && (!k.kconfig.is_empty() || !k.patches.is_empty()) {
            let field = if k.kconfig.is_empty() {
                "patches"
            } else {
                "kconfig"
            };
            bad(
                at(field),
                format!(
                    "`{}` is a prebuilt kernel: kconfig and patches need a built one \
                     (debian-source:SERIES or a git tree)",
                    k.spec
                ),
            );
        }
        let mut patches = Vec::new();
        for (j, p) in k.patches.iter().enumerate() {
            let resolved = join_clean(base, p);
            if kind_of(&resolved) == PathKind::Missing {
                bad(
                    vec![key("kernels"), Seg::Index(i), key("patches"), Seg::Index(j)],
                    format!("patch series `{p}` does not exist"),
                );
            }
            patches.push(resolved);
        }
        let label = match &k.label {
            Some(l) => {
                if l.is_empty()
                    || l.starts_with('.')
                    || l.contains('/')
                    || l.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    bad(
                        at("label"),
                        format!(
                            "label `{l}` must be non-empty, without `/` or spaces, and not \
                             start with `.` (it names a directory)"
                        ),
                    );
                }
                l.clone()
            }
            None => default_label(&k.spec),
        };
        if let Some(first) = labels.insert(label.clone(), i) {
            let path = if k.label.is_some() {
                at("label")
            } else {
                at("spec")
            };
            bad(
                path,
                format!(
                    "kernel label `{label}` is already used by kernel {}; give this one a \
                     different `label`",
                    first + 1
                ),
            );
        }
        kernels.push(MatrixKernel {
            spec,
            spec_text: k.spec,
            kconfig: k.kconfig,
            patches,
            label,
        });
    }

    let mut scenarios = Vec::new();
    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in raw.scenarios.iter().enumerate() {
        let at = vec![key("scenarios"), Seg::Index(i)];
        let path = join_clean(base, s);
        if kind_of(&path) != PathKind::File {
            bad(at.clone(), format!("scenario file `{s}` does not exist"));
        }
        let key = Path::new(s)
            .file_stem()
            .map(|k| k.to_string_lossy().into_owned())
            .unwrap_or_default();
        if key.is_empty() || key.starts_with('.') {
            bad(at.clone(), format!("`{s}` is not a scenario file name"));
        } else if let Some(first) = keys.insert(key.clone(), i) {
            bad(
                at,
                format!(
                    "scenario `{s}` has the same file name as `{}`; cells are named by file \
                     name, so rename one",
                    raw.scenarios[first]
                ),
            );
        }
        scenarios.push(MatrixScenario { path, key });
    }

    let mut parameters = BTreeMap::new();
    for (name, values) in raw.parameters {
        let at = vec![key("parameters"), key(&name)];
        if !crate::scenario::is_parameter_name(&name) {
            bad(
                at.clone(),
                format!(
                    "parameter name `{name}` must be lowercase letters, digits, `-` or `_` \
                     (it is substituted as ${{{name}}})"
                ),
            );
        }
        if values.is_empty() {
            bad(at.clone(), format!("parameter `{name}` lists no value"));
        }
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for (j, ParamValue(v)) in values.into_iter().enumerate() {
            let vat = vec![key("parameters"), key(&name), Seg::Index(j)];
            if v.is_empty() || v.contains(['/', ',', '=']) || v.chars().any(char::is_whitespace) {
                bad(
                    vat,
                    format!(
                        "value `{v}` of parameter `{name}` must be non-empty, without spaces, \
                         `/`, `,` or `=` (it is part of cell ids)"
                    ),
                );
            } else if !seen.insert(v.clone()) {
                bad(
                    vat,
                    format!("value `{v}` of parameter `{name}` is listed twice"),
                );
            }
            list.push(v);
        }
        parameters.insert(name, list);
    }

    // Refused before anything expands: a product of parameter lists grows fast.
    let count = parameters.values().try_fold(
        kernels.len().max(1) * scenarios.len().max(1),
        |n, v: &Vec<String>| n.checked_mul(v.len().max(1)),
    );
    if count.is_none_or(|n| n > MAX_CELLS) {
        let shown = count.map_or("more than 2^64".to_string(), |n| n.to_string());
        bad(
            vec![key("parameters")],
            format!("the matrix has {shown} cells, at most {MAX_CELLS}"),
        );
    }

    Matrix {
        name: raw.name,
        iterations: raw.iterations,
        kernels,
        scenarios,
        parameters,
        baseline: raw.baseline.map(|b| join_clean(base, b)),
        baseline_at: None,
    }
}

/// `base/p` with `.` and `dir/..` removed lexically, so paths read as the user thinks of
/// them (`tests/matrix/../smoke.yaml` is `tests/smoke.yaml`).
pub fn join_clean(base: &Path, p: impl AsRef<Path>) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in base.join(p).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn resolve_spec(spec: KernelSpec, base: &Path) -> KernelSpec {
    match spec {
        KernelSpec::Git { path, rev } => KernelSpec::Git {
            path: join_clean(base, path),
            rev,
        },
        KernelSpec::Image { path, modules } => KernelSpec::Image {
            path: join_clean(base, path),
            modules: modules.map(|m| join_clean(base, m)),
        },
        other => other,
    }
}

/// `debian:6.1` -> `debian-6.1`; any character that is not a letter, digit, `.`, `_`, `+`
/// or `-` becomes `-`, runs of `-` collapse, leading and trailing `-` and `.` go.
pub fn default_label(spec: &str) -> String {
    let mut out = String::new();
    for c in spec.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    // A leading `.` would make `..` possible in the cell's artifact directory.
    out.trim_matches(|c| c == '-' || c == '.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &Path) -> PathKind {
        match p.to_str().unwrap_or("") {
            "/m/a.yaml" | "/m/sub/b.yaml" | "/m/fix.mbox" | "/m/bzImage" => PathKind::File,
            "/m/linux" => PathKind::Dir,
            _ => PathKind::Missing,
        }
    }

    fn load_text(text: &str) -> Result<Matrix, MatrixError> {
        load_str(text, "m.yaml", Path::new("/m"), &kinds)
    }

    fn errors(text: &str) -> String {
        match load_text(text) {
            Ok(m) => panic!("expected errors, loaded {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = "\
name: seed
iterations: 5
kernels:
  - spec: debian:6.1
  - debian:6.12
  - { spec: linux@v6.6, kconfig: [debug], patches: [fix.mbox], label: \"6.6+fix\" }
scenarios: [a.yaml, sub/b.yaml]
parameters:
  filesystem: [xfs, ext4]
baseline: base.json
";

    #[test]
    fn loads_and_resolves_paths() {
        let m = load_text(GOOD).unwrap();
        assert_eq!(m.name, "seed");
        assert_eq!(m.iterations, Some(5));
        let labels: Vec<&str> = m.kernels.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(labels, ["debian-6.1", "debian-6.12", "6.6+fix"]);
        assert_eq!(
            m.kernels[2].spec,
            KernelSpec::Git {
                path: "/m/linux".into(),
                rev: Some("v6.6".into())
            }
        );
        assert_eq!(m.kernels[2].patches, [PathBuf::from("/m/fix.mbox")]);
        assert_eq!(m.scenarios[1].path, PathBuf::from("/m/sub/b.yaml"));
        assert_eq!(m.scenarios[1].key, "b");
        assert_eq!(m.baseline, Some(PathBuf::from("/m/base.json")));
        // A problem found reading the baseline later is placed where the file names it.
        let place = m.baseline_at.as_ref().expect("baseline place");
        assert_eq!(
            place.error("baseline `base.json`: not JSON".into()).to_string(),
            "m.yaml:10:11: baseline `base.json`: not JSON\n   |\n10 | baseline: base.json\n   |           ^^^^^^^^^\n\nerror: 1 problem in m.yaml"
        );
    }

    #[test]
    fn expands_in_documented_order_with_stable_ids() {
        let m = load_text(GOOD).unwrap();
        let cells = m.cells();
        assert_eq!(cells.len(), 3 * 2 * 2);
        let ids: Vec<String> = cells.iter().take(5).map(Cell::id).collect();
        assert_eq!(
            ids,
            [
                "debian-6.1/a/filesystem=xfs",
                "debian-6.1/a/filesystem=ext4",
                "debian-6.1/b/filesystem=xfs",
                "debian-6.1/b/filesystem=ext4",
                "debian-6.12/a/filesystem=xfs",
            ]
        );
        assert_eq!(cells[11].id(), "6.6+fix/b/filesystem=ext4");
        for (i, c) in cells.iter().enumerate() {
            let info = c.info();
            assert_eq!(info.index as usize, i);
            assert_eq!(info.total, 12);
            assert_eq!(info.id, c.id());
            assert_eq!(info.digest, cells[0].info().digest);
        }
        // The digest changes with the set of cells.
        let smaller = load_text(&GOOD.replace("[xfs, ext4]", "[xfs]")).unwrap();
        assert_ne!(smaller.cells()[0].info().digest, cells[0].info().digest);
    }

    #[test]
    fn several_parameters_vary_the_last_name_fastest() {
        let m = load_text(
            "name: p\nkernels: [debian:6.1]\nscenarios: [a.yaml]\nparameters:\n  threads: [1, 12]\n  filesystem: [xfs, btrfs]\n",
        )
        .unwrap();
        let ids: Vec<String> = m.cells().iter().map(Cell::id).collect();
        assert_eq!(
            ids,
            [
                "debian-6.1/a/filesystem=xfs,threads=1",
                "debian-6.1/a/filesystem=xfs,threads=12",
                "debian-6.1/a/filesystem=btrfs,threads=1",
                "debian-6.1/a/filesystem=btrfs,threads=12",
            ]
        );
        let plain = load_text("name: p\nkernels: [debian:6.1]\nscenarios: [a.yaml]\n").unwrap();
        assert_eq!(plain.cells()[0].id(), "debian-6.1/a");
        assert_eq!(plain.cells()[0].iterations, None);
    }

    #[test]
    fn unknown_field_has_its_position() {
        assert_eq!(
            errors("name: x\nkernels: [debian:6.1]\nscenarios: [a.yaml]\niteration: 3\n"),
            "m.yaml:4:1: unknown field `iteration`, expected one of `name`, `iterations`, \
             `kernels`, `scenarios`, `parameters`, `baseline`\n  |\n4 | iteration: 3\n  | \
             ^^^^^^^^^\n\nerror: 1 problem in m.yaml"
        );
        assert_eq!(
            errors(
                "name: x\nkernels:\n  - { spec: debian:6.1, kconfg: [a] }\nscenarios: [a.yaml]\n"
            ),
            "m.yaml:3:25: unknown field `kconfg` in `kernels[0]`, expected one of `spec`, \
             `kconfig`, `patches`, `label`\n  |\n3 |   - { spec: debian:6.1, kconfg: [a] }\n  \
             |                         ^^^^^^\n\nerror: 1 problem in m.yaml"
        );
        assert_eq!(
            errors("name: x\nkernels: [debian:6.1]\nscenarios: [a.yaml]\niterations: many\n"),
            "m.yaml:4:13: invalid type: string \"many\", expected u32 for `iterations`\n  |\n\
             4 | iterations: many\n  |             ^^^^\n\nerror: 1 problem in m.yaml"
        );
    }

    #[test]
    fn syntax_errors_and_wrong_shapes() {
        assert_eq!(
            errors("name: x\nkernels: [debian:6.1\nscenarios: [a.yaml]\n"),
            "m.yaml:3:10: illegal placement of ':' indicator (in the list opened at line 2, \
             column 10)\n  |\n3 | scenarios: [a.yaml]\n  |          ^\n\nerror: 1 problem in m.yaml"
        );
        assert_eq!(
            errors(""),
            "m.yaml:1:1: empty matrix: expected a map with at least `name`, `kernels` and \
             `scenarios`\n  |\n1 | \n  | ^\n\nerror: 1 problem in m.yaml"
        );
        assert_eq!(
            errors("- a\n"),
            "m.yaml:1:1: a matrix is a map with at least `name`, `kernels` and `scenarios`\n  \
             |\n1 | - a\n  | ^\n\nerror: 1 problem in m.yaml"
        );
        assert_eq!(
            errors("kernels: [debian:6.1]\nscenarios: [a.yaml]\n"),
            "m.yaml:1:1: missing field `name`\n  |\n1 | kernels: [debian:6.1]\n  | ^\n\n\
             error: 1 problem in m.yaml"
        );
        assert_eq!(
            errors("name: x\nkernels: [{label: a}]\nscenarios: [a.yaml]\n"),
            "m.yaml:2:11: missing field `spec` in `kernels[0]`\n  |\n2 | kernels: [{label: a}]\n  \
             |           ^\n\nerror: 1 problem in m.yaml"
        );
        // Every problem at once, the structural ones with the semantic ones.
        let got = errors(
            "name: x\niterations: -1\nkernels: [debian:9, {spec: debian:6.1, patchs: []}]\n\
             scenarios: [a.yaml, nope.yaml]\nparameters: {fs: xfs}\nname: y\n",
        );
        let heads: Vec<&str> = got.lines().filter(|l| l.starts_with("m.yaml:")).collect();
        assert_eq!(
            heads,
            [
                "m.yaml:2:13: invalid value: integer `-1`, expected u32 for `iterations`",
                "m.yaml:3:11: invalid kernel spec: unknown Debian kernel series `9` (known: 6.1, 6.12)",
                "m.yaml:3:40: unknown field `patchs` in `kernels[1]`, expected one of `spec`, `kconfig`, `patches`, `label`",
                "m.yaml:4:21: scenario file `nope.yaml` does not exist",
                "m.yaml:5:18: invalid type: string \"xfs\", expected a sequence for `parameters.fs`",
                "m.yaml:6:1: duplicate field `name`",
            ]
        );
    }

    #[test]
    fn reports_every_semantic_problem_at_once() {
        let text = "\
name: x
iterations: 0
kernels:
  - debian:5.10
  - { spec: debian:6.1, kconfig: [debug] }
  - debian:6.1
  - { spec: debian-source:6.1, patches: [missing.mbox], label: a b }
scenarios: [a.yaml, other/a.yaml, nope.yaml]
parameters:
  Bad: [x]
  filesystem: [xfs, xfs, a/b]
";
        let want = [
            "m.yaml:2:13: `iterations` must be at least 1",
            "m.yaml:4:5: invalid kernel spec: unknown Debian kernel series `5.10` (known: 6.1, 6.12)",
            "m.yaml:5:34: `debian:6.1` is a prebuilt kernel: kconfig and patches need a built one (debian-source:SERIES or a git tree)",
            "m.yaml:6:5: kernel label `debian-6.1` is already used by kernel 2; give this one a different `label`",
            "m.yaml:7:42: patch series `missing.mbox` does not exist",
            "m.yaml:7:64: label `a b` must be non-empty, without `/` or spaces, and not start with `.` (it names a directory)",
            "m.yaml:8:21: scenario file `other/a.yaml` does not exist",
            "m.yaml:8:21: scenario `other/a.yaml` has the same file name as `a.yaml`; cells are named by file name, so rename one",
            "m.yaml:8:35: scenario file `nope.yaml` does not exist",
            "m.yaml:10:8: parameter name `Bad` must be lowercase letters, digits, `-` or `_` (it is substituted as ${Bad})",
            "m.yaml:11:21: value `xfs` of parameter `filesystem` is listed twice",
            "m.yaml:11:26: value `a/b` of parameter `filesystem` must be non-empty, without spaces, `/`, `,` or `=` (it is part of cell ids)",
        ];
        let got = errors(text);
        let headlines: Vec<&str> = got.lines().filter(|l| l.starts_with("m.yaml:")).collect();
        assert_eq!(headlines, want);
    }

    #[test]
    fn loads_files_relative_to_themselves() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("matrix")).unwrap();
        std::fs::write(tmp.path().join("seed.yaml"), "name: seed\n").unwrap();
        let path = tmp.path().join("matrix/m.yaml");
        std::fs::write(
            &path,
            "name: m\nkernels: [debian:6.1]\nscenarios: [../seed.yaml, ../gone.yaml]\n",
        )
        .unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}:3:27: scenario file `../gone.yaml` does not exist\n  |\n\
                 3 | scenarios: [../seed.yaml, ../gone.yaml]\n  |                           \
                 ^^^^^^^^^^^^\n\nerror: 1 problem in {}",
                path.display(),
                path.display()
            )
        );
        std::fs::write(
            &path,
            "name: m\nkernels: [debian:6.1]\nscenarios: [../seed.yaml]\n",
        )
        .unwrap();
        let m = load(&path).unwrap();
        assert_eq!(m.scenarios[0].path, tmp.path().join("seed.yaml"));
        let missing = load(&tmp.path().join("nope.yaml")).unwrap_err();
        assert!(matches!(missing, MatrixError::Read { .. }), "{missing}");
    }

    #[test]
    fn a_huge_parameter_product_is_refused_before_expansion() {
        let values: Vec<String> = (0..60).map(|i| i.to_string()).collect();
        let list = format!("[{}]", values.join(", "));
        let text = format!(
            "name: x\nkernels: [debian:6.1]\nscenarios: [a.yaml]\nparameters:\n  a: {list}\n  b: {list}\n  c: {list}\n"
        );
        assert_eq!(
            errors(&text).lines().next().unwrap(),
            "m.yaml:5:3: the matrix has 216000 cells, at most 10000"
        );
    }

    #[test]
    fn joins_paths_lexically() {
        let j = |b: &str, p: &str| join_clean(Path::new(b), p);
        assert_eq!(
            j("tests/matrix", "../smoke.yaml"),
            Path::new("tests/smoke.yaml")
        );
        assert_eq!(j("", "../x.yaml"), Path::new("../x.yaml"));
        assert_eq!(j("/m", "./a/../b.yaml"), Path::new("/m/b.yaml"));
        assert_eq!(j("/m", "/abs/c.yaml"), Path::new("/abs/c.yaml"));
        assert_eq!(j("a", "../../b"), Path::new("../b"));
    }

    #[test]
    fn default_labels_are_path_safe() {
        assert_eq!(default_label("debian:6.1"), "debian-6.1");
        assert_eq!(
            default_label("/boot/vmlinuz-6.1,modules=/m"),
            "boot-vmlinuz-6.1-modules-m"
        );
        assert_eq!(default_label("../linux@v6.6~3"), "linux-v6.6-3");
    }

    #[test]
    fn shipped_examples_load() {
        let examples = [
            (
                include_str!("../../../tests/matrix/seed.yaml"),
                &[
                    "debian-6.1/seed-kill-umount",
                    "debian-6.1/control-psync",
                    "debian-6.12/seed-kill-umount",
                    "debian-6.12/control-psync",
                ][..],
            ),
            (
                include_str!("../../../tests/matrix/small.yaml"),
                &["debian-6.1/smoke", "debian-6.12/smoke"][..],
            ),
            (
                include_str!("../../../tests/matrix/filesystems.yaml"),
                &[
                    "debian-6.12/seed-kill-umount/filesystem=xfs",
                    "debian-6.12/seed-kill-umount/filesystem=ext4",
                    "debian-6.12/seed-kill-umount/filesystem=btrfs",
                ][..],
            ),
        ];
        // The scenarios live in tests/ (another part of the tree); only the format is
        // checked here.
        let scenario_files = |p: &Path| {
            if p.parent() == Some(Path::new("/repo/tests")) {
                PathKind::File
            } else {
                PathKind::Missing
            }
        };
        for (text, want) in examples {
            let m = load_str(
                text,
                "example",
                Path::new("/repo/tests/matrix"),
                &scenario_files,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let ids: Vec<String> = m.cells().iter().map(Cell::id).collect();
            assert_eq!(ids, want);
        }
    }
}
