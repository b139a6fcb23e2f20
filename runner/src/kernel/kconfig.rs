//! Kconfig fragments: name resolution, `tinyconfig` + `merge_config.sh` + `olddefconfig`, and
//! the check that every requested option survived (merge_config silently drops options whose
//! dependencies are unmet).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::build::make_command;
use super::exec::Exec;
use super::KernelError;

/// The fragment every built kernel starts from (after `tinyconfig`).
pub const BASE: &str = "base";

/// Directory of named fragments: `$CRASHRIG_KCONFIGS`, else the workspace's `kconfigs/`.
pub fn kconfigs_dir() -> PathBuf {
    std::env::var_os("CRASHRIG_KCONFIGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../kconfigs"))
}

/// `base`, `fs-xfs` -> `<dir>/<name>.config`; anything with a `/` or ending in `.config` is a
/// path as written.
pub fn resolve_name(name: &str, dir: &Path) -> PathBuf {
    if name.contains('/') || name.ends_with(".config") {
        PathBuf::from(name)
    } else {
        dir.join(format!("{name}.config"))
    }
}

/// One option's value in a `.config` or a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `# CONFIG_X is not set`
    NotSet,
    /// `CONFIG_X=...`: `y`, `m`, a number or a quoted string, as written.
    Set(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::NotSet => f.write_str("is not set"),
            Value::Set(v) => write!(f, "={v}"),
        }
    }
}

/// Renders `sym` with `value` the way a `.config` line reads.
fn line_for(sym: &str, value: &Value) -> String {
    match value {
        Value::NotSet => format!("# CONFIG_{sym} is not set"),
        Value::Set(v) => format!("CONFIG_{sym}={v}"),
    }
}

/// Parses one line; `None` for blank lines and ordinary comments. `CONFIG_X=n` is Kconfig's
/// other spelling of `# CONFIG_X is not set` (merge_config.sh and `make` take both), so it is
/// read as [`Value::NotSet`]: compared as a literal `n`, it never matched the final
/// `.config`, which writes the option as not set.
fn parse_line(line: &str) -> Option<Result<(String, Value), ()>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        return rest
            .strip_suffix(" is not set")
            .filter(|s| is_symbol(s))
            .map(|s| Ok((s.to_string(), Value::NotSet)));
    }
    if line.starts_with('#') {
        return None;
    }
    let parsed = line
        .strip_prefix("CONFIG_")
        .and_then(|r| r.split_once('='))
        .filter(|(s, v)| is_symbol(s) && !v.is_empty())
        .map(|(s, v)| {
            let value = match v {
                "n" => Value::NotSet,
                v => Value::Set(v.to_string()),
            };
            (s.to_string(), value)
        });
    Some(parsed.ok_or(()))
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b.is_ascii_lowercase()
        })
}

/// A final `.config`: symbol (without `CONFIG_`) -> value. Lines that are not options are
/// skipped (a `.config` is machine-written).
pub fn parse_config(text: &str) -> BTreeMap<String, Value> {
    text.lines()
        .filter_map(parse_line)
        .filter_map(Result::ok)
        .collect()
}

/// One requested option, with where it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub symbol: String,
    pub value: Value,
    /// Fragment file name, for messages.
    pub fragment: String,
    pub line: usize,
}

/// Parses a fragment strictly: a line that is neither an option, a comment nor blank is an
/// error (merge_config.sh would silently ignore a typo such as `CONFIG_FOO = y`).
pub fn parse_fragment(name: &str, text: &str) -> Result<Vec<Request>, KernelError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            None => {}
            Some(Ok((_, Value::Set(v)))) if matches!(v.as_str(), "Y" | "M" | "N") => {
                return Err(KernelError::FragmentValue {
                    fragment: name.to_string(),
                    line: i + 1,
                    text: line.trim().to_string(),
                    value: v,
                })
            }
            Some(Ok((symbol, value))) => out.push(Request {
                symbol,
                value,
                fragment: name.to_string(),
                line: i + 1,
            }),
            Some(Err(())) => {
                return Err(KernelError::FragmentSyntax {
                    fragment: name.to_string(),
                    line: i + 1,
                    text: line.trim().to_string(),
                })
            }
        }
    }
    Ok(out)
}

/// An option whose requested value did not survive `olddefconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub request: Request,
    /// What the final `.config` says (`None`: the symbol is absent, its menu is disabled).
    pub actual: Option<Value>,
}

/// Compares the requests (later ones override earlier ones, as merge_config does) with the
/// final config. A requested "is not set" also holds when the symbol is absent.
pub fn verify(requests: &[Request], final_config: &BTreeMap<String, Value>) -> Vec<Dropped> {
    let mut last: BTreeMap<&str, &Request> = BTreeMap::new();
    let mut order = Vec::new();
    for r in requests {
        if last.insert(&r.symbol, r).is_none() {
            order.push(r.symbol.as_str());
        }
    }
    order
        .into_iter()
        .filter_map(|sym| {
            let req = last[sym];
            let actual = final_config.get(sym);
            let holds = match (&req.value, actual) {
                (Value::NotSet, None | Some(Value::NotSet)) => true,
                (want, Some(got)) => want == got,
                (Value::Set(_), None) => false,
            };
            (!holds).then(|| Dropped {
                request: req.clone(),
                actual: actual.cloned(),
            })
        })
        .collect()
}

/// Renders dropped options, one per line, with each symbol's `depends on` where `deps` knows it.
pub fn describe_dropped(dropped: &[Dropped], deps: &dyn Fn(&str) -> Option<String>) -> String {
    let mut s = format!(
        "{} did not hold after `make olddefconfig`:",
        crate::report::plural(dropped.len() as u64, "requested kconfig option")
    );
    for d in dropped {
        let r = &d.request;
        let actual = match &d.actual {
            None => "no line for it".to_string(),
            Some(v) => format!("`{}`", line_for(&r.symbol, v)),
        };
        let _ = write!(
            s,
            "\n  {} ({}:{}): final .config has {}",
            line_for(&r.symbol, &r.value),
            r.fragment,
            r.line,
            actual
        );
        if let Some(dep) = deps(&r.symbol) {
            let _ = write!(s, "\n      {dep}");
        }
    }
    s
}

/// Finds `config SYM` in `Kconfig*` text and returns its conditions: its `depends on`
/// lines and the `if` blocks around it (pure, for tests).
pub fn depends_in(text: &str, sym: &str) -> Option<Vec<String>> {
    let mut lines = text.lines();
    let header = format!("config {sym}");
    let header2 = format!("menuconfig {sym}");
    // Conditions of the `if` blocks open at this point of the file.
    let mut ifs: Vec<String> = Vec::new();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if let Some(cond) = t.strip_prefix("if ") {
            ifs.push(cond.trim().to_string());
            continue;
        }
        if t == "endif" || t.starts_with("endif ") || t.starts_with("endif#") {
            ifs.pop();
            continue;
        }
        if t != header && t != header2 {
            continue;
        }
        let mut deps = ifs.clone();
        for l in lines.by_ref() {
            let t = l.trim();
            if t.starts_with("config ")
                || t.starts_with("menuconfig ")
                || t.starts_with("endmenu")
                || t.starts_with("endif")
                || t.starts_with("choice")
                || t.starts_with("endchoice")
                || t.starts_with("source ")
                || t.starts_with("menu ")
                || t.starts_with("if ")
            {
                break;
            }
            if let Some(d) = t.strip_prefix("depends on") {
                deps.push(d.trim().to_string());
            }
        }
        return Some(deps);
    }
    None
}

/// Where `sym` is defined in the source tree's `Kconfig*` files (x86's and every
/// architecture-independent one: crashrig builds x86_64) and its conditions.
pub fn find_definition(src: &Path, sym: &str) -> Option<(String, Vec<String>)> {
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let other_arch = dir == src.join("arch") && name != "x86";
                if !name.starts_with('.') && !other_arch {
                    stack.push(path);
                }
            } else if name.starts_with("Kconfig") {
                let Ok(text) = std::fs::read_to_string(&path) else {
                    continue;
                };
                if let Some(deps) = depends_in(&text, sym) {
                    let rel = path
                        .strip_prefix(src)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    return Some((rel, deps));
                }
            }
        }
    }
    None
}

/// Why `sym` may not have held, for [`describe_dropped`]: where it is defined, its conditions
/// and which symbols in them the final config leaves off; or that no Kconfig defines it.
pub fn explain(src: &Path, sym: &str, final_config: &BTreeMap<String, Value>) -> String {
    match find_definition(src, sym) {
        None => "no Kconfig file of this tree (x86 or architecture-independent) defines it: a \
                 typo, or an option of another kernel version"
            .to_string(),
        Some((file, deps)) => explain_conditions(&file, &deps, final_config),
    }
}

/// [`explain`] once the definition is found (pure, for tests).
pub fn explain_conditions(
    file: &str,
    deps: &[String],
    final_config: &BTreeMap<String, Value>,
) -> String {
    if deps.is_empty() {
        return format!(
            "no `depends on` ({file}); it may be a choice, `select`ed only, need a visible menu \
             or the value may be outside its range"
        );
    }
    let on = |s: &str| matches!(final_config.get(s), Some(Value::Set(v)) if v != "n");
    let mut off: Vec<&str> = Vec::new();
    for d in deps {
        for word in d.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let symbol = word.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if symbol && !on(word) && !off.contains(&word) {
                off.push(word);
            }
        }
    }
    let conditions = deps.join(" && ");
    if off.is_empty() {
        format!(
            "depends on {conditions} ({file}), all on in the final .config: the value may be \
             outside its range or not one its type takes"
        )
    } else {
        format!(
            "depends on {conditions} ({file}); off in the final .config: {}",
            off.join(", ")
        )
    }
}

/// Names of the fragments in `dir` (`base`, `fs-xfs`, ...), sorted.
pub fn known_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".config")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// A fragment file read for a build.
#[derive(Debug, Clone)]
pub struct Fragment {
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// The largest fragment read (8 MiB: a whole `.config` is well under 1 MiB).
const MAX_FRAGMENT_BYTES: u64 = 8 << 20;

/// Resolves and reads fragments: `base`, then `scenario`, then `user` (later ones override).
pub fn load_fragments(names: &[String], dir: &Path) -> Result<Vec<Fragment>, KernelError> {
    let mut out: Vec<Fragment> = Vec::new();
    for name in names {
        let path = resolve_name(name, dir);
        // merge_config.sh runs in the build directory: relative paths would break
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        if out.iter().any(|f| f.path == path) {
            continue;
        }
        let text = super::read_input(&path, MAX_FRAGMENT_BYTES).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        });
        // `--kconfig my.cfg` names a fragment of kconfigs/, not ./my.cfg: say so when that
        // file exists, instead of only "No such file" for a file the user can see.
        let text = text.map_err(|e| {
            let named = path != Path::new(name);
            if named && e.kind() == std::io::ErrorKind::NotFound && Path::new(name).is_file() {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "no named fragment `{name}`; for the file `{name}` in the current \
                         directory write `./{name}` (a fragment is a file when it has a `/` \
                         or ends in `.config`)"
                    ),
                )
            } else {
                e
            }
        });
        let text = text.map_err(|source| KernelError::Fragment {
            name: name.clone(),
            path: path.clone(),
            known: known_names(dir).join(", "),
            source,
        })?;
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone());
        parse_fragment(&file, &text)?;
        out.push(Fragment {
            name: file,
            path,
            text,
        });
    }
    Ok(out)
}

/// Generates `<obj>/.config` from `tinyconfig` plus `fragments` and verifies it. `obj` is a
/// `make O=` directory of `src`; returns the final `.config` text.
pub fn generate(
    exec: &Exec,
    src: &Path,
    obj: &Path,
    fragments: &[Fragment],
    log: &mut dyn FnMut(&str),
) -> Result<String, KernelError> {
    let _ = std::fs::remove_file(obj.join(".config"));
    exec.run(make_command(src, obj).arg("tinyconfig"), log)?;
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(obj)
        .arg("-m")
        .arg("-O")
        .arg(obj)
        .arg(obj.join(".config"));
    for f in fragments {
        merge.arg(&f.path);
    }
    exec.run(&mut merge, log)?;
    exec.run(make_command(src, obj).arg("olddefconfig"), log)?;
    let path = obj.join(".config");
    let text = std::fs::read_to_string(&path).map_err(|source| KernelError::Io {
        path: path.clone(),
        source,
    })?;
    let mut requests = Vec::new();
    for f in fragments {
        requests.extend(parse_fragment(&f.name, &f.text)?);
    }
    let final_config = parse_config(&text);
    let dropped = verify(&requests, &final_config);
    if !dropped.is_empty() {
        return Err(KernelError::ConfigDropped(describe_dropped(
            &dropped,
            &|s| Some(explain(src, s, &final_config)),
        )));
    }
    Ok(text)
}

/// Whether the final config builds anything as a module (then `make modules` and
/// `modules_install` run).
pub fn has_modules(config: &BTreeMap<String, Value>) -> bool {
    config.values().any(|v| *v == Value::Set("m".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINAL: &str = "\
#
# Automatically generated file; DO NOT EDIT.
#
CONFIG_64BIT=y
CONFIG_XFS_FS=y
# CONFIG_XFS_ONLINE_SCRUB is not set
CONFIG_NR_CPUS=8
CONFIG_LOCALVERSION=\"\"
# CONFIG_KASAN is not set
CONFIG_EXT4_FS=m
";

    fn req(fragment: &str, text: &str) -> Vec<Request> {
        parse_fragment(fragment, text).unwrap()
    }

    #[test]
    fn names_resolve_in_the_kconfigs_dir_and_paths_stay_paths() {
        let dir = Path::new("/k");
        assert_eq!(
            resolve_name("fs-xfs", dir),
            PathBuf::from("/k/fs-xfs.config")
        );
        assert_eq!(resolve_name("./mine", dir), PathBuf::from("./mine"));
        assert_eq!(
            resolve_name("mine.config", dir),
            PathBuf::from("mine.config")
        );
    }

    #[test]
    fn parses_final_config_values() {
        let c = parse_config(FINAL);
        assert_eq!(c.len(), 7);
        assert_eq!(c["XFS_FS"], Value::Set("y".into()));
        assert_eq!(c["XFS_ONLINE_SCRUB"], Value::NotSet);
        assert_eq!(c["LOCALVERSION"], Value::Set("\"\"".into()));
        assert!(has_modules(&c));
        assert!(!has_modules(&parse_config("CONFIG_A=y\n")));
    }

    #[test]
    fn fragment_typos_are_errors_with_the_line() {
        let err = parse_fragment("mine.config", "# ok\nCONFIG_A=y\nCONFIG_B = y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parse kconfig fragment mine.config:3: `CONFIG_B = y` is neither `CONFIG_X=value`, `# CONFIG_X is not set`, a comment nor blank"
        );
    }

    #[test]
    fn everything_requested_holds() {
        let r = req(
            "base.config",
            "CONFIG_64BIT=y\n# CONFIG_XFS_ONLINE_SCRUB is not set\n# CONFIG_ABSENT is not set\nCONFIG_NR_CPUS=8\n",
        );
        assert_eq!(verify(&r, &parse_config(FINAL)), vec![]);
    }

    /// `CONFIG_XFS_FS=n` was refused as "did not hold" although the final .config had it not
    /// set, as asked.
    #[test]
    fn n_means_not_set() {
        let r = req("off.config", "CONFIG_KASAN=n\nCONFIG_ABSENT=n\n");
        assert_eq!(r[0].value, Value::NotSet);
        assert_eq!(verify(&r, &parse_config(FINAL)), vec![]);
        // Asked `=n` of an option that stayed on: reported, in the form the kernel writes.
        let r = req("off.config", "CONFIG_XFS_FS=n\n");
        let dropped = verify(&r, &parse_config(FINAL));
        assert_eq!(
            describe_dropped(&dropped, &|_| None),
            "1 requested kconfig option did not hold after `make olddefconfig`:
  # CONFIG_XFS_FS is not set (off.config:1): final .config has `CONFIG_XFS_FS=y`"
        );
    }

    #[test]
    fn later_fragments_override_earlier_ones() {
        let mut r = req("base.config", "CONFIG_KASAN=y\n");
        r.extend(req("off.config", "# CONFIG_KASAN is not set\n"));
        assert_eq!(verify(&r, &parse_config(FINAL)), vec![]);
    }

    #[test]
    fn dropped_options_are_listed_with_their_dependencies() {
        let mut r = req("base.config", "CONFIG_64BIT=y\nCONFIG_KASAN=y\n");
        r.extend(req(
            "fs-xfs.config",
            "CONFIG_XFS_ONLINE_SCRUB=y\nCONFIG_EXT4_FS=y\nCONFIG_NR_CPUS=4\nCONFIG_XFS_RT=y\n",
        ));
        let dropped = verify(&r, &parse_config(FINAL));
        let deps = |s: &str| match s {
            "KASAN" => Some(
                "depends on HAVE_ARCH_KASAN && CC_HAS_KASAN_GENERIC (lib/Kconfig.kasan)"
                    .to_string(),
            ),
            _ => None,
        };
        assert_eq!(
            describe_dropped(&dropped, &deps),
            "5 requested kconfig options did not hold after `make olddefconfig`:
  CONFIG_KASAN=y (base.config:2): final .config has `# CONFIG_KASAN is not set`
      depends on HAVE_ARCH_KASAN && CC_HAS_KASAN_GENERIC (lib/Kconfig.kasan)
  CONFIG_XFS_ONLINE_SCRUB=y (fs-xfs.config:1): final .config has `# CONFIG_XFS_ONLINE_SCRUB is not set`
  CONFIG_EXT4_FS=y (fs-xfs.config:2): final .config has `CONFIG_EXT4_FS=m`
  CONFIG_NR_CPUS=4 (fs-xfs.config:3): final .config has `CONFIG_NR_CPUS=8`
  CONFIG_XFS_RT=y (fs-xfs.config:4): final .config has no line for it"
        );
    }

    #[test]
    fn depends_lines_are_found_in_kconfig_text() {
        let kconfig = "\
config XFS_FS
\ttristate \"XFS filesystem support\"
\tdepends on BLOCK
\tselect EXPORTFS

config XFS_ONLINE_REPAIR
\tbool \"XFS online metadata repair support\"
\tdefault n
\tdepends on XFS_FS && XFS_ONLINE_SCRUB
\tdepends on !XFS_DEBUG

config XFS_SELECTED
\tbool

if BLK_DEV
config VIRTIO_BLK
\ttristate \"Virtio block driver\"
\tdepends on VIRTIO
endif # BLK_DEV

config AFTER
\tbool
";
        let deps = |s: &str| depends_in(kconfig, s).map(|d| d.join(" && "));
        assert_eq!(deps("XFS_FS").as_deref(), Some("BLOCK"));
        assert_eq!(
            deps("XFS_ONLINE_REPAIR").as_deref(),
            Some("XFS_FS && XFS_ONLINE_SCRUB && !XFS_DEBUG")
        );
        assert_eq!(deps("XFS_SELECTED").as_deref(), Some(""));
        assert_eq!(deps("XFS"), None);
        // probe13: VIRTIO_BLK was blamed on VIRTIO (on), not on its enclosing `if BLK_DEV`.
        assert_eq!(deps("VIRTIO_BLK").as_deref(), Some("BLK_DEV && VIRTIO"));
        assert_eq!(deps("AFTER").as_deref(), Some(""));
    }

    /// probe13: the explanation printed `depends on` whether or not it was met, quoted another
    /// architecture's Kconfig, and called a typo "its menu or dependency is off".
    #[test]
    fn a_dropped_option_is_explained_by_what_is_off_or_by_no_definition() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "fs/xfs/Kconfig",
            "config XFS_RT\n\tbool \"rt\"\n\tdepends on XFS_FS\n",
        );
        write(
            "arch/riscv/Kconfig",
            "config NR_CPUS\n\tint\n\tdepends on SMP\n",
        );
        write("arch/x86/Kconfig", "config NR_CPUS\n\tint\n\trange 2 512\n");
        let final_config = parse_config("CONFIG_XFS_FS=y\nCONFIG_SMP=y\n");
        assert_eq!(
            explain(dir.path(), "XFS_RT", &final_config),
            "depends on XFS_FS (fs/xfs/Kconfig), all on in the final .config: the value may be \
             outside its range or not one its type takes"
        );
        let final_config = parse_config("# CONFIG_XFS_FS is not set\n");
        assert_eq!(
            explain(dir.path(), "XFS_RT", &final_config),
            "depends on XFS_FS (fs/xfs/Kconfig); off in the final .config: XFS_FS"
        );
        assert_eq!(
            explain(dir.path(), "NR_CPUS", &final_config),
            "no `depends on` (arch/x86/Kconfig); it may be a choice, `select`ed only, need a \
             visible menu or the value may be outside its range"
        );
        assert_eq!(
            explain(dir.path(), "DOES_NOT_EXIST", &final_config),
            "no Kconfig file of this tree (x86 or architecture-independent) defines it: a typo, \
             or an option of another kernel version"
        );
        assert_eq!(
            explain_conditions(
                "k",
                &["A && (B || !C)".into(), "D=m".into()],
                &parse_config("CONFIG_A=y\nCONFIG_D=m\n")
            ),
            "depends on A && (B || !C) && D=m (k); off in the final .config: B, C"
        );
    }

    /// `CONFIG_XFS_FS=Y` was taken, ignored by Kconfig, and blamed on a dependency.
    #[test]
    fn an_upper_case_bool_value_is_refused_at_its_line() {
        let err = parse_fragment("upper.config", "CONFIG_A=y\nCONFIG_XFS_FS=Y\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parse kconfig fragment upper.config:2: `CONFIG_XFS_FS=Y`: Kconfig takes `y`, `m` or \
             `n` in lower case (it ignores `Y` and keeps the default)"
        );
        assert!(err.is_input_error());
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("base.config"), "CONFIG_A=y\n").unwrap();
        std::fs::write(dir.path().join("fs-xfs.config"), "CONFIG_B=y\n").unwrap();
        let err = load_fragments(&["fs-zfs".into()], dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "read kconfig fragment `fs-zfs` ({}/fs-zfs.config; named fragments: base, fs-xfs)",
                dir.path().display()
            )
        );
    }

    #[test]
    fn shipped_fragments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kconfigs");
        for name in ["base", "fs-xfs", "fs-ext4", "fs-btrfs", "debug", "kasan"] {
            let f = load_fragments(&[name.to_string()], &dir).unwrap();
            assert!(
                !parse_fragment(&f[0].name, &f[0].text).unwrap().is_empty(),
                "{name}"
            );
        }
    }
}
