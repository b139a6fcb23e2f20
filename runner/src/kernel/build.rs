//! Cached out-of-tree kernel builds.
//!
//! Two keys: the *plan key* hashes what the user asked for (source identity, patch contents,
//! fragment contents, compiler) and maps to the *build key*, which hashes the source identity,
//! the patches, the FINAL `.config` and the compiler. A repeated request is a plan-key hit and
//! runs neither git nor make; a different request that yields the same `.config` is a
//! build-key hit after the config step only. `make O=` directories are kept per repository and
//! final config, inside the repository's worktree ([`source::OBJ_DIR_PREFIX`]: kbuild then
//! uses relative paths, and ccache entries serve every repository of the same source), and
//! the worktree is reused, so a patch touching one file recompiles only that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exec::Exec;
use super::kconfig::{self, Fragment};
use super::patches::{self, PatchFile};
use super::source::{self, Source};
use super::spec::ResolvedKernel;
use super::KernelError;
use crate::cache::{Cache, Contents};
use crate::host;

/// Bumped when the build recipe changes in a way that changes images. 2: ccache no longer
/// runs in depend mode, which could put another kernel into a bzImage (see
/// [`ensure_image_carries_kernel`]); images built before may be wrong and are built again.
const RECIPE: u32 = 2;

/// ccache's namespace for crashrig's builds: entries that ccache wrote in depend mode (crashrig
/// before recipe 2, or a user's own depend-mode builds) can hold a stale `piggy.o`, and a
/// direct-mode lookup would still find them.
const CCACHE_NAMESPACE: &str = "crashrig-2";

/// Where kbuild wraps the compressed kernel into the bzImage (x86).
const PIGGY: &str = "arch/x86/boot/compressed/piggy.S";
const PIGGY_OBJECT: &str = "arch/x86/boot/compressed/piggy.o";
const IMAGE: &str = "arch/x86/boot/bzImage";

/// Fixed so that rebuilds are reproducible and ccache-friendly.
pub const BUILD_TIMESTAMP: &str = "Sat Jan  1 00:00:00 UTC 2000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Downloading/unpacking the source, checking out the worktree.
    Source,
    /// Queued behind another crashrig building from the same repository (its lock).
    Waiting,
    /// Applying `--patches`.
    Patches,
    /// tinyconfig + fragments + olddefconfig + verification.
    Config,
    /// `make bzImage modules`.
    Compile,
    /// Copying the results into the cache.
    Install,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Source => "source",
            Stage::Waiting => "waiting for another crashrig building from this tree",
            Stage::Patches => "patches",
            Stage::Config => "config",
            Stage::Compile => "compile",
            Stage::Install => "install",
        })
    }
}

/// What a build is doing, for a terminal reporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProgress {
    pub stage: Stage,
    /// Since the build started.
    pub elapsed: Duration,
    /// The last interesting output line (`CC fs/xfs/xfs_super.o`), when there is one.
    pub line: Option<String>,
}

/// Which source a plan builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    Debian { series: String },
    Git { path: PathBuf, commit: String },
}

/// Everything a build depends on, known before any checkout.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec as the user wrote it, with options (for `ResolvedKernel::spec`).
    pub spec: String,
    pub source: SourceRef,
    /// Commit id, or `linux-source-6.1 6.1.192-2`.
    pub identity: String,
    pub patches: Vec<PatchFile>,
    pub fragments: Vec<Fragment>,
    /// The host toolchain, see [`compiler_version`].
    pub compiler: String,
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hash of what was asked for (pure).
pub fn plan_key(
    identity: &str,
    patches: &[PatchFile],
    fragments: &[Fragment],
    compiler: &str,
) -> String {
    let doc = serde_json::json!({
        "recipe": RECIPE,
        "source": identity,
        "patches": patches.iter().map(|p| sha(&p.content)).collect::<Vec<_>>(),
        "fragments": fragments.iter().map(|f| sha(f.text.as_bytes())).collect::<Vec<_>>(),
        "compiler": compiler,
    });
    sha(doc.to_string().as_bytes())
}

/// Hash of what determines the image (pure).
pub fn build_key(
    identity: &str,
    patches: &[PatchFile],
    final_config: &str,
    compiler: &str,
) -> String {
    let doc = serde_json::json!({
        "recipe": RECIPE,
        "source": identity,
        "patches": patches.iter().map(|p| sha(&p.content)).collect::<Vec<_>>(),
        "config": sha(final_config.as_bytes()),
        "compiler": compiler,
    });
    sha(doc.to_string().as_bytes())
}

/// `key.json` of a cache entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub key: String,
    pub plan_key: String,
    pub source: String,
    pub commit: String,
    pub patches: Vec<KeyPatch>,
    pub fragments: Vec<String>,
    pub compiler: String,
    pub release: Option<String>,
    pub modules: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyPatch {
    pub patch: String,
    pub subject: String,
    pub sha256: String,
    pub commit: String,
}

/// Programs `make bzImage modules` runs (besides the shell and coreutils): kbuild needs
/// flex and bison for the kconfig and dtc parsers, bc for `timeconst.h`. A missing one
/// otherwise ends the build in `make ... Error 127` with no package named.
pub const BUILD_TOOLS: &[&str] = &["make", "gcc", "bc", "flex", "bison"];

/// What `make modules_install` runs besides [`BUILD_TOOLS`]: without depmod, kbuild only
/// warns, and the modules come out without the modules.dep crashrig needs.
pub const MODULES_TOOLS: &[&str] = &["depmod"];

/// What some options (symbols without `CONFIG_`) of the final `.config` need on the host besides [`BUILD_TOOLS`]: kbuild
/// finds out only deep into make (objtool without libelf's headers, sign-file without
/// OpenSSL's), or not at all (BTF without pahole is a silent `CONFIG_DEBUG_INFO_BTF` drop on
/// some versions).
pub(crate) const CONFIG_NEEDS: &[(&[&str], Need)] = &[
    (
        &["OBJTOOL", "STACK_VALIDATION", "UNWINDER_ORC"],
        Need::Header("gelf.h", "libelf-dev"),
    ),
    (
        &["MODULE_SIG_FORMAT", "SYSTEM_TRUSTED_KEYRING"],
        Need::Header("openssl/opensslv.h", "libssl-dev"),
    ),
    (&["DEBUG_INFO_BTF"], Need::Tool("pahole")),
];

/// One thing an option needs on the host.
#[derive(Clone, Copy)]
pub(crate) enum Need {
    /// A program in PATH ([`host::TOOLS`] names its package).
    Tool(&'static str),
    /// A header under /usr/include, and the package that installs it.
    Header(&'static str, &'static str),
}

/// The directory [`CONFIG_NEEDS`]'s headers are looked up in.
pub(crate) const INCLUDE_DIR: &str = "/usr/include";

/// Before make: every program the build runs and every host header its options compile
/// against is on this host, or one error naming each missing one and its Debian package.
/// `config` is the final `.config` (`None` before the config step: only [`BUILD_TOOLS`]);
/// `find` and `exists` are the lookups ([`host::find`], `Path::exists`; seams for tests).
pub fn require_build_tools(
    config: Option<&BTreeMap<String, kconfig::Value>>,
    find: impl Fn(&str) -> Option<PathBuf>,
    exists: impl Fn(&Path) -> bool,
) -> Result<(), KernelError> {
    let mut tools = BUILD_TOOLS.to_vec();
    let mut headers: Vec<(String, &str)> = Vec::new();
    if let Some(config) = config {
        if kconfig::has_modules(config) {
            tools.extend(MODULES_TOOLS);
        }
        let on = |o: &&&str| matches!(config.get(**o), Some(kconfig::Value::Set(v)) if v == "y");
        for (options, need) in CONFIG_NEEDS {
            let Some(option) = options.iter().find(on) else {
                continue;
            };
            match *need {
                Need::Tool(t) => tools.push(t),
                Need::Header(file, package) => {
                    let path = Path::new(INCLUDE_DIR).join(file);
                    if !exists(&path) {
                        headers.push((
                            format!("`{}` (CONFIG_{option}=y needs it)", path.display()),
                            package,
                        ));
                    }
                }
            }
        }
    }
    let missing = host::require_all_with(&tools, find).err();
    if headers.is_empty() {
        return missing.map_or(Ok(()), |m| Err(m.into()));
    }
    let mut what = Vec::new();
    let mut packages = Vec::new();
    if let Some(m) = missing {
        let names: Vec<String> = m.tools.iter().map(|t| format!("`{t}`")).collect();
        what.push(format!("{} (not in PATH)", names.join(", ")));
        packages = m.packages;
    }
    for (header, package) in headers {
        what.push(header);
        if !packages.iter().any(|p| p == package) {
            packages.push(package.to_string());
        }
    }
    Err(KernelError::MissingBuildFiles {
        what: what.join(", "),
        packages: packages.join(" "),
    })
}

/// The host toolchain a build's `.config` records (`CONFIG_CC_VERSION_TEXT`, `LD_VERSION`,
/// `PAHOLE_VERSION`): the first lines of `gcc --version`, `ld --version` and `pahole
/// --version` (`pahole: none` without it). Part of every cache key: installing pahole or
/// another binutils changes the `.config` the same request produces, and a build made
/// before must not answer for it.
pub fn compiler_version(exec: &Exec) -> Result<String, KernelError> {
    host::require("gcc")?;
    let first = |tool: &str| -> Result<String, KernelError> {
        let out = exec.output(Command::new(tool).arg("--version"))?;
        Ok(out.lines().next().unwrap_or_default().trim().to_string())
    };
    let mut text = first("gcc")?;
    if host::find("ld").is_some() {
        text.push_str("; ");
        text.push_str(&first("ld")?);
    }
    text.push_str("; ");
    match host::find("pahole") {
        Some(_) => text.push_str(&first("pahole")?),
        None => text.push_str("pahole: none"),
    }
    Ok(text)
}

/// The `make` variables every build uses.
pub fn make_command(src: &Path, obj: &Path) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(src)
        .arg(format!("O={}", obj.display()))
        .env("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP)
        .env("KBUILD_BUILD_USER", "crashrig")
        .env("KBUILD_BUILD_HOST", "crashrig")
        .env("KBUILD_BUILD_VERSION", "1")
        // set and empty: no `+` suffix from setlocalversion for a git tree
        .env("LOCALVERSION", "");
    if host::find("ccache").is_some() {
        cmd.arg("CC=ccache gcc");
        ccache_env(&mut cmd);
    }
    cmd
}

/// How crashrig runs ccache: never in depend mode, in its own namespace.
///
/// Depend mode hashes a source and the headers in the compiler's `-MD` output, and never runs
/// the preprocessor. A file an assembler pulls in with `.incbin` is in neither, so ccache
/// 4.7 in depend mode served `piggy.o` (which `.incbin`s the compressed kernel) from an
/// earlier build whenever the wrapper's text, the compressed sizes, was the same: a
/// bisection measured a one-constant commit with the bad end's kernel, and called the two
/// kernels identical. The default modes run the preprocessor on a miss, see `.incbin` and do
/// not cache such a file.
pub(crate) fn ccache_env(cmd: &mut Command) {
    cmd.env_remove("CCACHE_DEPEND")
        .env("CCACHE_NODEPEND", "1")
        .env("CCACHE_NAMESPACE", CCACHE_NAMESPACE);
}

/// Whether the built bzImage in `obj` holds the compressed kernel the build made (the file
/// `piggy.S` includes with `.incbin`): `Err(why)` when it does not.
pub(crate) fn image_carries_kernel(obj: &Path) -> Result<Result<(), String>, KernelError> {
    let piggy = obj.join(PIGGY);
    let text = std::fs::read_to_string(&piggy).map_err(io(&piggy))?;
    let Some(payload) = text.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(".incbin")?;
        Some(rest.trim().trim_matches('"').to_string())
    }) else {
        return Ok(Err(format!("{PIGGY} includes no compressed kernel")));
    };
    let payload_path = obj.join(&payload);
    let kernel = std::fs::read(&payload_path).map_err(io(&payload_path))?;
    let image_path = obj.join(IMAGE);
    let image = std::fs::read(&image_path).map_err(io(&image_path))?;
    if kernel.is_empty() {
        return Ok(Err(format!("{payload} is empty")));
    }
    Ok(match memchr::memmem::find(&image, &kernel) {
        Some(_) => Ok(()),
        None => Err(format!(
            "it does not contain {payload} ({} bytes), the compressed kernel this build made",
            kernel.len()
        )),
    })
}

/// After make: the image must carry the kernel just built. A stale `piggy.o` (from a
/// compiler cache that cannot see `.incbin`, or left in the build directory by a crashrig
/// from before recipe 2) is removed and `remake` runs (a make without ccache); if the image
/// is still wrong, the build fails. Returns whether the image had to be rebuilt.
pub(crate) fn ensure_image_carries_kernel(
    obj: &Path,
    remake: &mut dyn FnMut() -> Result<(), KernelError>,
) -> Result<bool, KernelError> {
    if image_carries_kernel(obj)?.is_ok() {
        return Ok(false);
    }
    for stale in [PIGGY_OBJECT, IMAGE] {
        let path = obj.join(stale);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(KernelError::Io { path, source }),
        }
    }
    remake()?;
    match image_carries_kernel(obj)? {
        Ok(()) => Ok(true),
        Err(why) => Err(KernelError::StaleImage {
            image: obj.join(IMAGE),
            obj: obj.to_path_buf(),
            why,
        }),
    }
}

fn jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The lines of a build log that carry the compiler's (or linker's) errors.
pub fn error_lines(log: &str) -> String {
    let mut lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("error:")
                || l.contains("undefined reference")
                || l.starts_with("make") && l.contains("***")
                // An error inside a macro's header names the header; this names the use.
                || l.contains(": note: in expansion of macro")
        })
        .collect();
    lines.dedup();
    if lines.len() > 30 {
        lines.drain(30..);
    }
    lines.join("\n")
}

/// A kbuild quiet-mode line worth showing (`  CC      fs/xfs/xfs_super.o`).
pub fn progress_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix("  ")?;
    let (verb, what) = rest.split_once(' ')?;
    (!verb.is_empty()
        && verb
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()))
    .then(|| format!("{verb} {}", what.trim()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn plan_file(cache: &Cache, plan_key: &str) -> Result<PathBuf, KernelError> {
    Ok(cache.dir("builds/plans")?.join(plan_key))
}

/// The build key a plan key is known to map to, when that entry exists.
pub fn lookup(cache: &Cache, plan_key: &str) -> Result<Option<PathBuf>, KernelError> {
    let Ok(key) = std::fs::read_to_string(plan_file(cache, plan_key)?) else {
        return Ok(None);
    };
    let entry = cache.dir("builds")?.join(key.trim());
    Ok(is_entry(cache, &entry)?.then_some(entry))
}

/// A finished build entry that matches its completion marker (a damaged one is removed).
fn is_entry(cache: &Cache, dir: &Path) -> Result<bool, KernelError> {
    Ok(cache
        .lookup(dir, &["key.json", "bzImage"], Contents::Hashed)?
        .is_ready())
}

fn remember(cache: &Cache, plan_key: &str, key: &str) -> Result<(), KernelError> {
    let path = plan_file(cache, plan_key)?;
    crate::report::durable::write_atomic(&path, key.as_bytes()).map_err(io(&path))
}

/// The finished build entry `key` (a results file's `build_key`) as a [`ResolvedKernel`],
/// when the cache still holds it whole: `crashrig repro` boots the build a run used rather
/// than rebuilding from patch files that may have moved or changed since.
pub fn recorded(cache: &Cache, key: &str, spec: &str) -> Option<ResolvedKernel> {
    // a key is a hex digest: anything else names no entry (and no path outside the cache)
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let entry = cache.dir("builds").ok()?.join(key);
    if !is_entry(cache, &entry).ok()? {
        return None;
    }
    load(&entry, spec).ok()
}

/// Reads a finished entry as a [`ResolvedKernel`].
pub fn load(entry: &Path, spec: &str) -> Result<ResolvedKernel, KernelError> {
    let key_path = entry.join("key.json");
    let text = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let key: KeyFile = serde_json::from_str(&text).map_err(|e| KernelError::Io {
        path: key_path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })?;
    let image = entry.join("bzImage");
    let bytes = std::fs::read(&image).map_err(io(&image))?;
    let version = if key.patches.is_empty() {
        key.commit.clone()
    } else {
        format!("{}+{} patches", key.commit, key.patches.len())
    };
    Ok(ResolvedKernel {
        spec: spec.to_string(),
        release: key.release.clone(),
        version,
        image,
        modules_dir: key.modules.then(|| entry.join("modules")),
        system_map: Some(entry.join("System.map")),
        vmlinux: Some(entry.join("vmlinux")),
        build_key: Some(key.key),
        image_sha256: sha(&bytes),
        kconfig: Vec::new(),
        patches: Vec::new(),
    })
}

/// Builds `plan` (or finds it in the cache). Synchronous: run it on a blocking thread.
pub fn build(
    exec: &Exec,
    plan: &Plan,
    cache: &Cache,
    progress: &mut dyn FnMut(BuildProgress),
) -> Result<ResolvedKernel, KernelError> {
    let pkey = plan_key(
        &plan.identity,
        &plan.patches,
        &plan.fragments,
        &plan.compiler,
    );
    if let Some(entry) = lookup(cache, &pkey)? {
        return load(&entry, &plan.spec);
    }
    // Before minutes of download and checkout: `make` itself runs in the config step.
    require_build_tools(None, host::find, Path::exists)?;
    let start = Instant::now();
    let mut log: Vec<String> = Vec::new();
    progress(BuildProgress {
        stage: Stage::Source,
        elapsed: start.elapsed(),
        line: None,
    });
    let src = {
        let mut on_line = |l: &str| log.push(l.to_string());
        match &plan.source {
            SourceRef::Debian { series } => {
                source::debian_source(exec, series, cache, &mut on_line)?
            }
            SourceRef::Git { path, commit } => source::git_source(exec, path, Some(commit))?,
        }
    };
    let repo_id = source::repo_id(exec, &src.repo)?;
    let lock_path = cache.dir("builds")?.join(format!("{repo_id}.lock"));
    let _lock = crate::cache::lock_or_wait(&lock_path, || {
        progress(BuildProgress {
            stage: Stage::Waiting,
            elapsed: start.elapsed(),
            line: Some(lock_path.display().to_string()),
        })
    })?;
    // another process may have built it while we waited for the lock
    if let Some(entry) = lookup(cache, &pkey)? {
        return load(&entry, &plan.spec);
    }
    let src = source::own_clone(
        exec,
        &src,
        &cache.dir("clones")?.join(format!("{repo_id}.git")),
        &mut |l| log.push(l.to_string()),
    )?;
    let worktree = cache.dir("worktrees")?.join(&repo_id);
    source::checkout(exec, &src, &worktree, &mut |l| log.push(l.to_string()))?;

    let result = build_in(
        exec, plan, cache, &src, &repo_id, &worktree, &pkey, start, &mut log, progress,
    );
    if result.is_err() {
        // nothing half-applied stays behind: back to the plain commit, or gone
        if source::reset(exec, &worktree, &src.commit, &mut |_| {}).is_err() {
            source::remove_worktree(exec, &src, &worktree);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn build_in(
    exec: &Exec,
    plan: &Plan,
    cache: &Cache,
    src: &Source,
    repo_id: &str,
    worktree: &Path,
    pkey: &str,
    start: Instant,
    log: &mut Vec<String>,
    progress: &mut dyn FnMut(BuildProgress),
) -> Result<ResolvedKernel, KernelError> {
    let mut report = |stage: Stage, line: Option<String>| {
        progress(BuildProgress {
            stage,
            elapsed: start.elapsed(),
            line,
        })
    };
    report(Stage::Patches, None);
    let applied = patches::apply(worktree, &plan.patches, source::COMMIT_DATE)?;

    report(Stage::Config, None);
    let kconf = cache.dir("builds/obj")?.join(format!("{repo_id}-kconfig"));
    std::fs::create_dir_all(&kconf).map_err(io(&kconf))?;
    let config = kconfig::generate(exec, worktree, &kconf, &plan.fragments, &mut |l| {
        log.push(l.to_string())
    })?;
    let key = build_key(&plan.identity, &plan.patches, &config, &plan.compiler);
    let builds = cache.dir("builds")?;
    let dest = builds.join(&key);
    if is_entry(cache, &dest)? {
        remember(cache, pkey, &key)?;
        return load(&dest, &plan.spec);
    }

    report(Stage::Compile, None);
    let config_id = &sha(config.as_bytes())[..16];
    let obj = worktree.join(format!("{}{config_id}", source::OBJ_DIR_PREFIX));
    // Where earlier versions of crashrig kept it (absolute paths, so no ccache entry served another
    // repository); its own cache directory, and this repository's lock is held.
    let _ = std::fs::remove_dir_all(
        cache
            .dir("builds/obj")?
            .join(format!("{repo_id}-{config_id}")),
    );
    std::fs::create_dir_all(&obj).map_err(io(&obj))?;
    let obj_config = obj.join(".config");
    // rewriting an equal .config would bump its mtime and make kbuild reconfigure
    if std::fs::read_to_string(&obj_config).ok().as_deref() != Some(config.as_str()) {
        std::fs::write(&obj_config, &config).map_err(io(&obj_config))?;
    }
    let parsed = kconfig::parse_config(&config);
    let modules = kconfig::has_modules(&parsed);
    require_build_tools(Some(&parsed), host::find, Path::exists)?;
    let log_path = obj.join("build.log");
    let mut make_log: Vec<String> = std::mem::take(log);
    let mut targets = vec!["bzImage"];
    if modules {
        targets.push("modules");
    }
    let result = exec.run(
        make_command(worktree, &obj)
            .arg(format!("-j{}", jobs()))
            .args(&targets),
        &mut |l| {
            if let Some(p) = progress_line(l) {
                report(Stage::Compile, Some(p));
            }
            make_log.push(l.to_string());
        },
    );
    let text = make_log.join("\n") + "\n";
    std::fs::write(&log_path, &text).map_err(io(&log_path))?;
    if let Err(e) = result {
        if matches!(e, KernelError::Cancelled) {
            return Err(e);
        }
        let failed = cache.dir("builds/failed")?.join(format!("{key}.log"));
        let _ = std::fs::copy(&log_path, &failed);
        return Err(KernelError::Compile {
            errors: error_lines(&text),
            log: failed,
        });
    }
    let mut remake_log: Vec<String> = Vec::new();
    let rebuilt = ensure_image_carries_kernel(&obj, &mut || {
        remake_log.push(format!(
            "crashrig: {IMAGE} did not hold the compressed kernel this build made; \
             removed {PIGGY_OBJECT} and made bzImage again without ccache"
        ));
        exec.run(
            make_command(worktree, &obj)
                .env("CCACHE_DISABLE", "1")
                .arg(format!("-j{}", jobs()))
                .arg("bzImage"),
            &mut |l| remake_log.push(l.to_string()),
        )
    })?;
    if rebuilt {
        let text = text + &remake_log.join("\n") + "\n";
        std::fs::write(&log_path, &text).map_err(io(&log_path))?;
    }

    report(Stage::Install, None);
    let tmp = cache.tempdir()?;
    let entry = tmp.path().join("entry");
    std::fs::create_dir_all(&entry).map_err(io(&entry))?;
    let copy = |from: PathBuf, to: &str| -> Result<(), KernelError> {
        std::fs::copy(&from, entry.join(to))
            .map(|_| ())
            .map_err(|source| KernelError::Io { path: from, source })
    };
    copy(obj.join(IMAGE), "bzImage")?;
    copy(obj.join("vmlinux"), "vmlinux")?;
    copy(obj.join("System.map"), "System.map")?;
    copy(obj.join(".config"), "config")?;
    copy(log_path.clone(), "build.log")?;
    let release = std::fs::read_to_string(obj.join("include/config/kernel.release"))
        .ok()
        .map(|r| r.trim().to_string());
    if modules {
        let mods = tmp.path().join("mods");
        let mut install_log = Vec::new();
        exec.run(
            make_command(worktree, &obj)
                .arg(format!("INSTALL_MOD_PATH={}", mods.display()))
                .arg("modules_install"),
            &mut |l| install_log.push(l.to_string()),
        )?;
        let release = release.clone().unwrap_or_default();
        let dir = mods.join("lib/modules").join(&release);
        // these point into crashrig's worktree and build directory
        let _ = std::fs::remove_file(dir.join("build"));
        let _ = std::fs::remove_file(dir.join("source"));
        std::fs::rename(&dir, entry.join("modules")).map_err(io(&dir))?;
    }
    let keyfile = KeyFile {
        key: key.clone(),
        plan_key: pkey.to_string(),
        source: plan.identity.clone(),
        commit: src.commit.clone(),
        patches: applied
            .iter()
            .map(|(p, c)| KeyPatch {
                patch: p.to_string(),
                subject: p.subject.clone(),
                sha256: sha(&p.content),
                commit: c.clone(),
            })
            .collect(),
        fragments: plan
            .fragments
            .iter()
            .map(|f| f.path.display().to_string())
            .collect(),
        compiler: plan.compiler.clone(),
        release,
        modules,
    };
    let key_path = entry.join("key.json");
    let json = serde_json::to_string_pretty(&keyfile).expect("plain data serializes");
    std::fs::write(&key_path, json).map_err(io(&key_path))?;
    cache.install(&entry, &dest, Contents::Hashed)?;
    remember(cache, pkey, &key)?;
    load(&dest, &plan.spec)
}

/// Options a build was asked for, for `ResolvedKernel::spec`.
pub fn describe_spec(spec: &str, fragments: &[String], patches: &[PathBuf]) -> String {
    let mut s = spec.to_string();
    for f in fragments {
        s.push_str(" --kconfig ");
        s.push_str(f);
    }
    for p in patches {
        s.push_str(" --patches ");
        s.push_str(&p.display().to_string());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::patches::PatchKind;

    fn patch(content: &str) -> PatchFile {
        PatchFile {
            path: "p".into(),
            index: None,
            kind: PatchKind::Diff,
            subject: "s".into(),
            strip: 1,
            content: content.as_bytes().to_vec(),
        }
    }

    fn frag(text: &str) -> Fragment {
        Fragment {
            name: "f.config".into(),
            path: "/k/f.config".into(),
            text: text.into(),
        }
    }

    #[test]
    fn keys_change_with_every_input_and_only_with_them() {
        let base = build_key("c1", &[patch("a")], "CONFIG_A=y\n", "gcc 12");
        assert_eq!(
            base,
            build_key("c1", &[patch("a")], "CONFIG_A=y\n", "gcc 12")
        );
        for other in [
            build_key("c2", &[patch("a")], "CONFIG_A=y\n", "gcc 12"),
            build_key("c1", &[patch("b")], "CONFIG_A=y\n", "gcc 12"),
            build_key("c1", &[patch("a"), patch("a")], "CONFIG_A=y\n", "gcc 12"),
            build_key("c1", &[], "CONFIG_A=y\n", "gcc 12"),
            build_key("c1", &[patch("a")], "CONFIG_A=m\n", "gcc 12"),
            build_key("c1", &[patch("a")], "CONFIG_A=y\n", "gcc 13"),
        ] {
            assert_ne!(base, other);
        }
        let p = plan_key("c1", &[patch("a")], &[frag("CONFIG_A=y\n")], "gcc 12");
        assert_eq!(
            p,
            plan_key("c1", &[patch("a")], &[frag("CONFIG_A=y\n")], "gcc 12")
        );
        assert_ne!(
            p,
            plan_key("c1", &[patch("a")], &[frag("CONFIG_B=y\n")], "gcc 12")
        );
        // the order of patches matters
        assert_ne!(
            plan_key("c1", &[patch("a"), patch("b")], &[], "g"),
            plan_key("c1", &[patch("b"), patch("a")], &[], "g")
        );
    }

    #[test]
    fn compiler_errors_are_picked_from_the_log() {
        let log = "  CC      init/main.o
../init/main.c: In function 'start_kernel':
../init/main.c:1000:9: error: 'foo' undeclared (first use in this function)
../init/main.c:1000:9: note: each undeclared identifier is reported only once
make[2]: *** [../scripts/Makefile.build:250: init/main.o] Error 1
  CC      kernel/fork.o
";
        assert_eq!(
            error_lines(log),
            "../init/main.c:1000:9: error: 'foo' undeclared (first use in this function)
make[2]: *** [../scripts/Makefile.build:250: init/main.o] Error 1"
        );
        // An error in a macro's expansion: the header's line, then where the macro was used.
        let log = "../include/linux/printk.h:427:10: error: expected ';' before 'if'
  427 |         _p_func(_fmt, ##__VA_ARGS__);
../include/linux/printk.h:455:33: note: in expansion of macro 'printk_index_wrap'
../init/main.c:1396:2: note: in expansion of macro 'pr_info'
";
        assert_eq!(
            error_lines(log),
            "../include/linux/printk.h:427:10: error: expected ';' before 'if'
../include/linux/printk.h:455:33: note: in expansion of macro 'printk_index_wrap'
../init/main.c:1396:2: note: in expansion of macro 'pr_info'"
        );
    }

    #[test]
    fn kbuild_lines_become_progress() {
        assert_eq!(
            progress_line("  CC      fs/xfs/xfs_super.o").as_deref(),
            Some("CC fs/xfs/xfs_super.o")
        );
        assert_eq!(
            progress_line("  LD [M]  fs/xfs/xfs.ko").as_deref(),
            Some("LD [M]  fs/xfs/xfs.ko")
        );
        assert_eq!(progress_line("make[1]: Entering directory"), None);
        assert_eq!(progress_line("  in function foo"), None);
    }

    #[test]
    fn a_hit_is_read_back_from_the_entry() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path());
        let key = "k".repeat(64);
        cache_entry(
            &cache,
            KeyFile {
                patches: vec![KeyPatch {
                    patch: "x.patch".into(),
                    subject: "s".into(),
                    sha256: "0".into(),
                    commit: "def".into(),
                }],
                release: Some("6.1.192".into()),
                ..key_file(&key)
            },
        );
        assert_eq!(lookup(&cache, "p").unwrap(), None);
        remember(&cache, "p", &key).unwrap();
        let k = load(&lookup(&cache, "p").unwrap().unwrap(), "spec").unwrap();
        assert_eq!(k.version, "abc+1 patches");
        assert_eq!(k.release.as_deref(), Some("6.1.192"));
        assert_eq!(k.build_key.as_deref(), Some(key.as_str()));
        assert_eq!(k.image_sha256, sha(b"image"));
        assert_eq!(k.modules_dir, None);
    }

    /// `crashrig repro` boots the build a run recorded while the cache holds it; a key that
    /// is not a digest names nothing.
    #[test]
    fn a_recorded_build_is_found_by_its_key() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path());
        let key = "a".repeat(64);
        cache_entry(&cache, key_file(&key));
        let k = recorded(&cache, &key, "debian-source:6.1").unwrap();
        assert_eq!(k.build_key.as_deref(), Some(key.as_str()));
        assert_eq!(k.image_sha256, sha(b"image"));
        assert!(recorded(&cache, &"b".repeat(64), "s").is_none());
        assert!(recorded(&cache, "../builds", "s").is_none());
        assert!(recorded(&cache, "", "s").is_none());
    }

    /// The key.json of a build of no patches, under `key`.
    fn key_file(key: &str) -> KeyFile {
        KeyFile {
            key: key.to_string(),
            plan_key: "p".into(),
            source: "linux-source-6.1 6.1.192-2".into(),
            commit: "abc".into(),
            patches: vec![],
            fragments: vec![],
            compiler: "gcc".into(),
            release: None,
            modules: false,
        }
    }

    /// A build cache entry holding the image `image` and `kf` as its key.json.
    fn cache_entry(cache: &Cache, kf: KeyFile) {
        let entry = cache.dir("builds").unwrap().join(&kf.key);
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::write(entry.join("bzImage"), b"image").unwrap();
        std::fs::write(entry.join("key.json"), serde_json::to_string(&kf).unwrap()).unwrap();
    }

    /// A build directory with a piggy.S that includes `payload` and an image `image`.
    fn obj_dir(payload: &[u8], image: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let compressed = dir.path().join("arch/x86/boot/compressed");
        std::fs::create_dir_all(&compressed).unwrap();
        std::fs::write(
            dir.path().join(PIGGY),
            ".section \".rodata..compressed\",\"a\",@progbits\ninput_data:\n\
             .incbin \"arch/x86/boot/compressed/vmlinux.bin.gz\"\ninput_data_end:\n",
        )
        .unwrap();
        std::fs::write(compressed.join("vmlinux.bin.gz"), payload).unwrap();
        std::fs::write(dir.path().join(PIGGY_OBJECT), b"old object").unwrap();
        std::fs::write(dir.path().join(IMAGE), image).unwrap();
        dir
    }

    #[test]
    fn the_image_must_hold_the_compressed_kernel_piggy_includes() {
        let ok = obj_dir(b"\x1f\x8bKERNEL-B", b"setup|\x1f\x8bKERNEL-B|tail");
        assert_eq!(image_carries_kernel(ok.path()).unwrap(), Ok(()));
        let stale = obj_dir(b"\x1f\x8bKERNEL-B", b"setup|\x1f\x8bKERNEL-A|tail");
        let why = image_carries_kernel(stale.path()).unwrap().unwrap_err();
        assert!(why.contains("vmlinux.bin.gz (10 bytes)"), "{why}");
        std::fs::write(stale.path().join(PIGGY), "no payload here\n").unwrap();
        let why = image_carries_kernel(stale.path()).unwrap().unwrap_err();
        assert!(why.contains("includes no compressed kernel"), "{why}");
        let empty = obj_dir(b"", b"image");
        assert!(image_carries_kernel(empty.path()).unwrap().is_err());
        std::fs::remove_file(ok.path().join(IMAGE)).unwrap();
        assert!(matches!(
            image_carries_kernel(ok.path()),
            Err(KernelError::Io { .. })
        ));
    }

    #[test]
    fn a_stale_image_is_made_again_without_its_old_piggy_object_or_the_build_fails() {
        // Right at once: no second make.
        let ok = obj_dir(b"KERNEL-B", b"setup|KERNEL-B");
        let mut calls = 0;
        let rebuilt = ensure_image_carries_kernel(ok.path(), &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((rebuilt, calls), (false, 0));

        // Stale: piggy.o and the image go, the second make writes the right image.
        let stale = obj_dir(b"KERNEL-B", b"setup|KERNEL-A");
        let obj = stale.path().to_path_buf();
        let rebuilt = ensure_image_carries_kernel(&obj, &mut || {
            assert!(!obj.join(PIGGY_OBJECT).exists(), "piggy.o must be rebuilt");
            assert!(!obj.join(IMAGE).exists());
            std::fs::write(obj.join(IMAGE), b"setup|KERNEL-B").unwrap();
            Ok(())
        })
        .unwrap();
        assert!(rebuilt);

        // Still stale after the second make: an error that names the image and what to do.
        let stuck = obj_dir(b"KERNEL-B", b"setup|KERNEL-A");
        let obj = stuck.path().to_path_buf();
        let err = ensure_image_carries_kernel(&obj, &mut || {
            std::fs::write(obj.join(IMAGE), b"setup|KERNEL-A").unwrap();
            Ok(())
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KernelError::StaleImage { .. }), "{text}");
        assert!(
            text.contains("bzImage") && text.contains("build again"),
            "{text}"
        );
        assert!(
            !err.is_input_error(),
            "a stale image is the machine's fault, not a skip"
        );

        // The second make's own failure is the build's.
        let failing = obj_dir(b"KERNEL-B", b"setup|KERNEL-A");
        let err = ensure_image_carries_kernel(failing.path(), &mut || Err(KernelError::Cancelled))
            .unwrap_err();
        assert!(matches!(err, KernelError::Cancelled));
    }

    /// A host without flex ended `crashrig build` in `make ... Error 127` naming no package;
    /// one without libelf's headers failed minutes into make, in objtool.
    #[test]
    fn a_missing_build_tool_or_header_is_named_with_its_package_before_make() {
        let without = |gone: &'static [&'static str]| {
            move |t: &str| (!gone.contains(&t)).then(|| PathBuf::from("/usr/bin").join(t))
        };
        let all_headers = |_: &Path| true;
        let config = |text: &str| kconfig::parse_config(text);
        let modules = config("CONFIG_EXT4_FS=m\n");
        assert!(require_build_tools(Some(&modules), without(&[]), all_headers).is_ok());
        let err = require_build_tools(None, without(&["flex", "bison", "depmod"]), all_headers)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`flex` and `bison` not found in PATH; install them with `apt-get install flex bison`"
        );
        let err = require_build_tools(Some(&modules), without(&["bc", "depmod"]), all_headers)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`bc` and `depmod` not found in PATH; install them with `apt-get install bc kmod`"
        );
        assert!(
            !err.is_input_error(),
            "the host's fault: bisect must stop, not skip"
        );
        // Headers and pahole only when an option that needs them is on.
        let no_headers = |_: &Path| false;
        let plain = config("CONFIG_EXT4_FS=y\n# CONFIG_UNWINDER_ORC is not set\n");
        assert!(require_build_tools(Some(&plain), without(&["pahole"]), no_headers).is_ok());
        let orc = config("CONFIG_UNWINDER_ORC=y\nCONFIG_DEBUG_INFO_BTF=y\n");
        let err = require_build_tools(Some(&orc), without(&["pahole"]), all_headers).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`pahole` not found in PATH; install it with `apt-get install dwarves`"
        );
        let signed = config("CONFIG_UNWINDER_ORC=y\nCONFIG_MODULE_SIG_FORMAT=y\nCONFIG_X=m\n");
        let err = require_build_tools(Some(&signed), without(&["flex", "depmod"]), no_headers)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the build needs what this host lacks: `flex`, `depmod` (not in PATH), \
             `/usr/include/gelf.h` (CONFIG_UNWINDER_ORC=y needs it), \
             `/usr/include/openssl/opensslv.h` (CONFIG_MODULE_SIG_FORMAT=y needs it); install \
             them with `apt-get install flex kmod libelf-dev libssl-dev`"
        );
        assert!(!err.is_input_error());
        for tool in BUILD_TOOLS.iter().chain(MODULES_TOOLS) {
            assert_ne!(host::package_for(tool), "(unknown package)", "{tool}");
        }
        for (_, need) in CONFIG_NEEDS {
            if let Need::Tool(t) = need {
                assert_ne!(host::package_for(t), "(unknown package)", "{t}");
            }
        }
    }

    /// Installing pahole (or another binutils) changes the `.config` the same request makes
    /// (`CONFIG_PAHOLE_VERSION`, `CONFIG_LD_VERSION`): the cache keys must change with them.
    #[test]
    fn the_toolchain_in_every_cache_key_names_gcc_ld_and_pahole() {
        for tool in ["gcc", "ld", "pahole"] {
            host::require(tool).unwrap_or_else(|e| panic!("{e} (scripts/setup.sh installs it)"));
        }
        let text = compiler_version(&Exec::default()).unwrap();
        let parts: Vec<&str> = text.split("; ").collect();
        assert_eq!(parts.len(), 3, "{text}");
        assert!(parts[0].starts_with("gcc"), "{text}");
        assert!(parts[1].starts_with("GNU ld"), "{text}");
        assert!(parts[2].starts_with('v'), "pahole --version: {text}");
        let without_pahole = format!("{}; {}; pahole: none", parts[0], parts[1]);
        assert_ne!(
            plan_key("src", &[], &[], &text),
            plan_key("src", &[], &[], &without_pahole)
        );
        assert_ne!(
            build_key("src", &[], "CONFIG_X=y\n", &text),
            build_key("src", &[], "CONFIG_X=y\n", &without_pahole)
        );
    }

    /// The real ccache with crashrig's settings: an object that `.incbin`s a file is never
    /// served from an earlier compile of the same text, not even from an entry that a
    /// depend-mode ccache (crashrig before recipe 2) wrote into the same cache directory.
    #[test]
    fn ccache_never_serves_an_incbin_object_built_from_another_payload() {
        for tool in ["ccache", "gcc"] {
            host::require(tool).unwrap_or_else(|e| panic!("{e} (scripts/setup.sh installs it)"));
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("piggy.S"),
            ".section .rodata\n.globl input_data\ninput_data:\n.incbin \"payload.bin\"\n",
        )
        .unwrap();
        let compile = |payload: &[u8], depend_mode: bool| -> Vec<u8> {
            std::fs::write(d.join("payload.bin"), payload).unwrap();
            let mut cmd = Command::new("ccache");
            cmd.current_dir(d)
                .env("CCACHE_DIR", d.join("cache"))
                .env_remove("CCACHE_DISABLE");
            if depend_mode {
                cmd.env("CCACHE_DEPEND", "1");
            } else {
                ccache_env(&mut cmd);
            }
            let out = cmd
                .args([
                    "gcc", "-c", "piggy.S", "-o", "piggy.o", "-MD", "-MF", "piggy.d",
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            std::fs::read(d.join("piggy.o")).unwrap()
        };
        let holds = |object: &[u8], payload: &[u8]| memchr::memmem::find(object, payload).is_some();
        let (a, b, c) = (
            b"KERNEL-A-compressed-payload".as_slice(),
            b"KERNEL-B-compressed-payload".as_slice(),
            b"KERNEL-C-compressed-payload".as_slice(),
        );
        // What the old setting did: the second compile got the first payload.
        let first = compile(a, true);
        assert!(holds(&first, a));
        let old = compile(b, true);
        assert!(
            holds(&old, a) && !holds(&old, b),
            "depend mode no longer serves a stale object: the test shows nothing"
        );
        // crashrig's setting, on the same cache: always the payload on disk.
        for payload in [b, c, a, b] {
            let object = compile(payload, false);
            let text = String::from_utf8_lossy(payload);
            assert!(holds(&object, payload), "stale object for {text}");
        }
    }
}
