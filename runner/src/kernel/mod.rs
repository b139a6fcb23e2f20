//! Kernels: spec parsing, Debian prebuilt packages, source trees, kconfig fragments, patch
//! series and the build cache.

pub mod build;
pub mod debian;
pub mod exec;
pub mod kconfig;
pub mod patches;
pub mod source;
pub mod spec;

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use build::{BuildProgress, Stage};
pub use patches::PatchFile;
pub use spec::{KernelSpec, ResolvedKernel};

use crate::cache::{Cache, CacheError};
use crate::host::MissingTool;
use exec::Exec;

/// Options of every built spec (`build`, `run`, `bisect`, matrix files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// `--kconfig`: fragment names (`kconfigs/<name>.config`) or paths, merged after `base`
    /// and the scenario's fragments.
    pub kconfig: Vec<String>,
    /// `--patches`: mbox, quilt series, directory of `*.patch` or one patch, in order.
    pub patches: Vec<PathBuf>,
    /// The scenario's `kconfig:` list, merged after `base`.
    pub scenario_kconfig: Vec<String>,
}

impl BuildOptions {
    /// Fragment names in merge order: `base`, the scenario's, the user's (later ones win).
    pub fn fragment_names(&self) -> Vec<String> {
        std::iter::once(kconfig::BASE.to_string())
            .chain(self.scenario_kconfig.iter().cloned())
            .chain(self.kconfig.iter().cloned())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "`{}` is not a Linux kernel image: it has no bzImage setup header (`HdrS` at byte 0x202); give a bzImage or vmlinuz",
        path.display()
    )]
    NotAnImage { path: PathBuf },
    #[error(
        "`{}` is {} MiB: too large for a kernel image (a bzImage is well under {} MiB); give a bzImage or vmlinuz",
        path.display(),
        len.div_ceil(1 << 20),
        MAX_IMAGE_BYTES >> 20
    )]
    ImageTooBig { path: PathBuf, len: u64 },
    /// `PATH,modules=DIR` with a DIR that is not a modules tree.
    #[error("use `{}` as the kernel's modules (`,modules=DIR`): {why}; give the `lib/modules/<release>` directory of this kernel's `make modules_install`", dir.display())]
    Modules { dir: PathBuf, why: String },
    #[error("`,modules=` names no directory; give the `lib/modules/<release>` directory of this kernel's `make modules_install`, or leave `,modules=` out")]
    ModulesEmpty,
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    /// Programs and headers a build needs (see `build::require_build_tools`).
    #[error("the build needs what this host lacks: {what}; install them with `apt-get install {packages}`")]
    MissingBuildFiles { what: String, packages: String },
    #[error(transparent)]
    Debian(#[from] debian::DebianError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("find package {package} (run `apt-get update`; the machine's apt lists may be empty)")]
    NoPackage { package: String },
    #[error("resolve `{rev}` to a commit in {repo}")]
    BadRevision { repo: PathBuf, rev: String },
    /// `--kernel PATH` (no `@REF`) of a tree whose tracked files differ from HEAD.
    #[error(
        "{}: the working tree has uncommitted changes ({files}); a build takes commits only, so \
         it would test {commit} without them. Commit the changes, pass them as a patch \
         (`git -C {} diff HEAD > fix.patch`, then `--patches fix.patch`), or build the commit \
         as it is with `{}@HEAD`",
        path.display(), path.display(), path.display()
    )]
    Uncommitted {
        path: PathBuf,
        commit: String,
        files: String,
    },
    #[error("run `{command}`:\n{output}")]
    Command { command: String, output: String },
    #[error("start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read kconfig fragment `{name}` ({path}; named fragments: {known})")]
    Fragment {
        name: String,
        path: PathBuf,
        /// The names in the kconfigs directory, for the message.
        known: String,
        #[source]
        source: io::Error,
    },
    #[error("parse kconfig fragment {fragment}:{line}: `{text}` is neither `CONFIG_X=value`, `# CONFIG_X is not set`, a comment nor blank")]
    FragmentSyntax {
        fragment: String,
        line: usize,
        text: String,
    },
    /// A value Kconfig does not take (it ignores it, and the option keeps its default).
    #[error("parse kconfig fragment {fragment}:{line}: `{text}`: Kconfig takes `y`, `m` or `n` in lower case (it ignores `{value}` and keeps the default)")]
    FragmentValue {
        fragment: String,
        line: usize,
        text: String,
        value: String,
    },
    /// The verification after `olddefconfig`; the text lists every dropped option.
    #[error("configure the kernel: {0}")]
    ConfigDropped(String),
    #[error("read patches {path}: {why}")]
    NotAPatch { path: PathBuf, why: String },
    #[error("read patch series {}:{line}: {why}", series.display())]
    Series {
        series: PathBuf,
        line: usize,
        why: String,
    },
    #[error("apply patch {patch} ({subject:?}):\n{details}")]
    PatchDoesNotApply {
        patch: String,
        subject: String,
        details: String,
    },
    #[error("compile the kernel (full log: {}):\n{errors}", log.display())]
    Compile { errors: String, log: PathBuf },
    /// After make, and after a second make without ccache: the bzImage does not hold the
    /// compressed kernel the build made (see `build::ensure_image_carries_kernel`).
    #[error("check the built kernel image {}: {why}; remove {} (crashrig's build directory for this configuration) and build again", image.display(), obj.display())]
    StaleImage {
        image: PathBuf,
        obj: PathBuf,
        why: String,
    },
    #[error("build kernels from {0}: only `debian-source:X` and git trees are built")]
    NotBuilt(String),
    #[error("finish the build: it was cancelled")]
    Cancelled,
    #[error("finish the build: its thread panicked")]
    Panicked,
}

impl KernelError {
    /// Whether the user's input is at fault (bad patch, bad fragment, dropped option, compile
    /// error), as opposed to the machine. Both exit with 2; bisect treats these as "skip".
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            KernelError::BadRevision { .. }
                | KernelError::Fragment { .. }
                | KernelError::FragmentSyntax { .. }
                | KernelError::FragmentValue { .. }
                | KernelError::ConfigDropped(_)
                | KernelError::NotAPatch { .. }
                | KernelError::Series { .. }
                | KernelError::PatchDoesNotApply { .. }
                | KernelError::Compile { .. }
        )
    }
}

/// What a file that is not a regular file is, for messages: "a directory", "a FIFO", ...
pub fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The content of a file the user named (a patch, a kconfig fragment): a regular file of at
/// most `limit` bytes, else an error saying which it is not. Opened O_NONBLOCK, so a FIFO
/// cannot block the open; `/dev/zero` is refused, not read until memory runs out.
pub(crate) fn read_input(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "it is {}, not a regular file",
            file_kind(meta.file_type())
        )));
    }
    if meta.len() > limit {
        return Err(io::Error::other(format!(
            "it is {} bytes, more than the {} MiB crashrig reads of it",
            meta.len(),
            limit >> 20
        )));
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The largest file `--kernel FILE` takes (256 MiB): a bzImage is 5-20 MB, far less than
/// this, and the file is hashed on every run.
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// How much of an image's start holds the setup header and the version string it points to:
/// `kernel_version` is a 16-bit offset from 0x200, so the string starts before 0x10200.
const SETUP_BYTES: u64 = 0x10200 + 4096;

/// The release (`uname -r`) written in a bzImage's setup header: the `kernel_version` field
/// at 0x20E is an offset (minus 0x200) of a NUL-terminated version string.
pub fn image_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize + 0x200;
    let rest = image.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    text.split_whitespace().next().map(str::to_string)
}

fn resolve_image(
    path: &Path,
    modules: Option<&Path>,
    spec: &KernelSpec,
) -> Result<ResolvedKernel, KernelError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_an_image = || KernelError::NotAnImage {
        path: path.to_path_buf(),
    };
    // O_NONBLOCK: a FIFO put where the spec saw a file must not block the open.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(not_an_image());
    }
    // The header first: QEMU would only say it exited at start.
    let mut setup = Vec::new();
    (&mut file)
        .take(SETUP_BYTES)
        .read_to_end(&mut setup)
        .map_err(io_err)?;
    if setup.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(not_an_image());
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(KernelError::ImageTooBig {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    if let Some(dir) = modules {
        check_modules_dir(dir)?;
    }
    file.rewind().map_err(io_err)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file.take(MAX_IMAGE_BYTES), &mut hasher).map_err(io_err)?;
    let sha = hex::encode(hasher.finalize());
    Ok(ResolvedKernel {
        spec: spec.to_string(),
        release: image_release(&setup),
        version: format!("image sha256:{}", &sha[..16]),
        image: path.to_path_buf(),
        modules_dir: modules.map(Path::to_path_buf),
        system_map: None,
        vmlinux: None,
        build_key: None,
        image_sha256: sha,
        kconfig: Vec::new(),
        patches: Vec::new(),
    })
}

/// `,modules=DIR` names a modules tree: a directory with modules.dep. Checked before
/// anything boots: a wrong DIR otherwise showed up as a guest without its disk or network
/// drivers, or not at all while an initrd made before was reused.
fn check_modules_dir(dir: &Path) -> Result<(), KernelError> {
    let refuse = |why: String| KernelError::Modules {
        dir: dir.to_path_buf(),
        why,
    };
    if dir.as_os_str().is_empty() {
        return Err(KernelError::ModulesEmpty);
    }
    match std::fs::metadata(dir) {
        Err(e) => return Err(refuse(e.to_string())),
        Ok(m) if !m.is_dir() => return Err(refuse("it is not a directory".into())),
        Ok(_) => {}
    }
    match std::fs::metadata(dir.join("modules.dep")) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(refuse(
            "it has no modules.dep (run `depmod -b <root> <release>` for it)".into(),
        )),
    }
}

/// Everything a build of `spec` depends on, read without checking anything out: source
/// identity, patches, fragments, compiler. Sync and cheap (apt-cache or git rev-parse).
pub fn plan(spec: &KernelSpec, opts: &BuildOptions) -> Result<build::Plan, KernelError> {
    plan_with(spec, opts, patches::expand(&opts.patches)?)
}

/// Like [`plan`], with an already expanded patch list (bisect applies prefixes of a series).
pub fn plan_with(
    spec: &KernelSpec,
    opts: &BuildOptions,
    patch_list: Vec<PatchFile>,
) -> Result<build::Plan, KernelError> {
    let exec = Exec::default();
    let (source, identity) = match spec {
        KernelSpec::DebianSource { series } => (
            build::SourceRef::Debian {
                series: series.clone(),
            },
            source::debian_identity(&exec, series)?,
        ),
        KernelSpec::Git { path, rev } => {
            let src = source::git_source(&exec, path, rev.as_deref())?;
            (
                build::SourceRef::Git {
                    path: src.repo.clone(),
                    commit: src.commit.clone(),
                },
                src.identity,
            )
        }
        other => return Err(KernelError::NotBuilt(other.to_string())),
    };
    let fragments = kconfig::load_fragments(&opts.fragment_names(), &kconfig::kconfigs_dir())?;
    Ok(build::Plan {
        spec: build::describe_spec(&spec.to_string(), &opts.kconfig, &opts.patches),
        source,
        identity,
        patches: patch_list,
        fragments,
        compiler: build::compiler_version(&exec)?,
    })
}

/// The plan key of a build (what bisect compares before building): equal keys mean the same
/// sources, patches, fragments and compiler, hence the same image. `None` for specs that are
/// not built (compare `ResolvedKernel::image_sha256` for those).
pub fn build_plan_key(
    spec: &KernelSpec,
    opts: &BuildOptions,
) -> Result<Option<String>, KernelError> {
    if !spec.is_built() {
        return Ok(None);
    }
    let p = plan(spec, opts)?;
    Ok(Some(build::plan_key(
        &p.identity,
        &p.patches,
        &p.fragments,
        &p.compiler,
    )))
}

/// The cached kernel of a plan key, if it was built before (no git, no make).
pub fn cached(
    cache: &Cache,
    plan_key: &str,
    spec: &str,
) -> Result<Option<ResolvedKernel>, KernelError> {
    build::lookup(cache, plan_key)?
        .map(|entry| build::load(&entry, spec))
        .transpose()
}

/// Sets the cancel flag when the resolving future is dropped (Ctrl-C), so make dies with it.
struct CancelOnDrop(Exec);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0
            .cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves any spec to a bootable kernel: Debian packages are downloaded, images hashed,
/// sources built (or found in the cache). `opts` apply to built specs only.
pub async fn resolve(
    spec: &KernelSpec,
    opts: &BuildOptions,
    cache: &Cache,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<ResolvedKernel, KernelError> {
    match spec {
        KernelSpec::Debian { series } => {
            let (series, cache) = (series.clone(), cache.clone());
            tokio::task::spawn_blocking(move || debian::resolve(&series, &cache))
                .await
                .map_err(|_| KernelError::Panicked)?
                .map_err(KernelError::from)
        }
        KernelSpec::Image { path, modules } => resolve_image(path, modules.as_deref(), spec),
        KernelSpec::DebianSource { .. } | KernelSpec::Git { .. } => {
            let (spec, opts) = (spec.clone(), opts.clone());
            resolve_built(cache, progress, move || plan(&spec, &opts)).await
        }
    }
}

/// [`resolve`] for a built spec with an explicit patch list (bisect over a series' prefixes).
pub async fn resolve_patches(
    spec: &KernelSpec,
    opts: &BuildOptions,
    patch_list: Vec<PatchFile>,
    cache: &Cache,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
) -> Result<ResolvedKernel, KernelError> {
    let (spec, opts) = (spec.clone(), opts.clone());
    resolve_built(cache, progress, move || plan_with(&spec, &opts, patch_list)).await
}

async fn resolve_built(
    cache: &Cache,
    progress: &(dyn Fn(BuildProgress) + Send + Sync),
    make_plan: impl FnOnce() -> Result<build::Plan, KernelError> + Send + 'static,
) -> Result<ResolvedKernel, KernelError> {
    let exec = Exec::default();
    // dropping this future (Ctrl-C) kills make; after completion the flag is harmless
    let _guard = CancelOnDrop(exec.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cache = cache.clone();
    let task = tokio::task::spawn_blocking(move || {
        let plan = make_plan()?;
        build::build(&exec, &plan, &cache, &mut |p| {
            let _ = tx.send(p);
        })
    });
    while let Some(p) = rx.recv().await {
        progress(p);
    }
    task.await.map_err(|_| KernelError::Panicked)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_image(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let off: u16 = 0x300 - 0x200;
        img[0x20E..0x210].copy_from_slice(&off.to_le_bytes());
        img[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    #[test]
    fn release_comes_from_the_setup_header() {
        assert_eq!(
            image_release(&fake_image(
                "6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP"
            ))
            .as_deref(),
            Some("6.1.0-28-cloud-amd64")
        );
        let mut bad = fake_image("6.1");
        bad[0x202] = b'X';
        assert_eq!(image_release(&bad), None);
        assert_eq!(image_release(b"short"), None);
    }

    #[test]
    fn a_file_without_a_setup_header_is_not_taken_for_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |p: &Path| KernelSpec::Image {
            path: p.to_path_buf(),
            modules: None,
        };
        let text = dir.path().join("passwd");
        std::fs::write(&text, b"root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let err = resolve_image(&text, None, &spec(&text)).unwrap_err();
        assert!(
            err.to_string().ends_with("is not a Linux kernel image: it has no bzImage setup header (`HdrS` at byte 0x202); give a bzImage or vmlinuz"),
            "{err}"
        );
        let image = dir.path().join("bzImage");
        std::fs::write(&image, fake_image("6.1.0-28-cloud-amd64 #1")).unwrap();
        let k = resolve_image(&image, None, &spec(&image)).unwrap();
        assert_eq!(k.release.as_deref(), Some("6.1.0-28-cloud-amd64"));
    }

    /// `--kernel BIG_FILE` read the whole file (20 GB) before looking at it: the header is
    /// checked first, the size bounded, and the hash streamed.
    #[test]
    fn a_huge_file_is_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |p: &Path| KernelSpec::Image {
            path: p.to_path_buf(),
            modules: None,
        };
        // Sparse: 20 GiB of length, no blocks.
        let sparse = dir.path().join("sparse.img");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(20 << 30)
            .unwrap();
        assert!(matches!(
            resolve_image(&sparse, None, &spec(&sparse)),
            Err(KernelError::NotAnImage { .. })
        ));
        let big = dir.path().join("bzImage-big");
        let mut file = std::fs::File::create(&big).unwrap();
        std::io::Write::write_all(&mut file, &fake_image("6.1.0 #1")).unwrap();
        file.set_len(MAX_IMAGE_BYTES + 1).unwrap();
        let err = resolve_image(&big, None, &spec(&big)).unwrap_err();
        assert!(
            err.to_string().ends_with("is 257 MiB: too large for a kernel image (a bzImage is well under 256 MiB); give a bzImage or vmlinuz"),
            "{err}"
        );
        // A FIFO (or a device) is no image, and is never read.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str()))
            .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            resolve_image(&fifo, None, &spec(&fifo)),
            Err(KernelError::NotAnImage { .. })
        ));
        // The streamed hash is the whole file's.
        let image = dir.path().join("bzImage");
        let bytes = fake_image("6.1.0 #1");
        std::fs::write(&image, &bytes).unwrap();
        let k = resolve_image(&image, None, &spec(&image)).unwrap();
        assert_eq!(k.image_sha256, hex::encode(Sha256::digest(&bytes)));
    }

    /// `,modules=/nonexistent`, `,modules=/etc` and `,modules=` booted with whatever initrd
    /// was cached for the image: each is refused before anything boots.
    #[test]
    fn modules_must_name_a_modules_tree() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bzImage");
        std::fs::write(&image, fake_image("6.1.0 #1")).unwrap();
        let tree = dir.path().join("lib/modules/6.1.0");
        std::fs::create_dir_all(&tree).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let resolve = |m: &Path| {
            let spec = KernelSpec::Image {
                path: image.clone(),
                modules: Some(m.to_path_buf()),
            };
            resolve_image(&image, Some(m), &spec).map_err(|e| e.to_string())
        };
        let tail =
            "; give the `lib/modules/<release>` directory of this kernel's `make modules_install`";
        let missing = dir.path().join("nonexistent");
        assert_eq!(
            resolve(Path::new("")).unwrap_err(),
            "`,modules=` names no directory; give the `lib/modules/<release>` directory of this \
             kernel's `make modules_install`, or leave `,modules=` out"
        );
        for (m, why) in [
            (
                &missing,
                "No such file or directory (os error 2)".to_string(),
            ),
            (&file, "it is not a directory".to_string()),
            (
                &tree,
                "it has no modules.dep (run `depmod -b <root> <release>` for it)".to_string(),
            ),
        ] {
            assert_eq!(
                resolve(m).unwrap_err(),
                format!(
                    "use `{}` as the kernel's modules (`,modules=DIR`): {why}{tail}",
                    m.display()
                )
            );
        }
        std::fs::write(tree.join("modules.dep"), "").unwrap();
        assert_eq!(
            resolve(&tree).unwrap().modules_dir.as_deref(),
            Some(tree.as_path())
        );
    }

    /// `--patches /dev/zero` or `--kconfig /dev/zero` read until memory ran out.
    #[test]
    fn user_files_are_read_only_when_regular_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_input(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is a character device, not a regular file"
        );
        let err = read_input(dir.path(), 1 << 20).unwrap_err();
        assert_eq!(err.to_string(), "it is a directory, not a regular file");
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len((1 << 20) + 1)
            .unwrap();
        let err = read_input(&big, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it is 1048577 bytes, more than the 1 MiB crashrig reads of it"
        );
        let small = dir.path().join("small");
        std::fs::write(&small, b"CONFIG_A=y\n").unwrap();
        assert_eq!(read_input(&small, 1 << 20).unwrap(), b"CONFIG_A=y\n");
        // Through the callers.
        let err = patches::expand(&[PathBuf::from("/dev/zero")]).unwrap_err();
        assert!(
            crate::report::error_chain(&err)
                .ends_with("it is a character device, not a regular file"),
            "{err}"
        );
        let err = kconfig::load_fragments(&["/dev/zero".into()], dir.path()).unwrap_err();
        assert!(
            crate::report::error_chain(&err)
                .ends_with("it is a character device, not a regular file"),
            "{err}"
        );
    }

    #[test]
    fn fragments_merge_base_then_scenario_then_user() {
        let o = BuildOptions {
            kconfig: vec!["debug".into()],
            patches: vec![],
            scenario_kconfig: vec!["fs-xfs".into()],
        };
        assert_eq!(o.fragment_names(), ["base", "fs-xfs", "debug"]);
    }

    #[test]
    fn prebuilt_specs_have_no_plan_key() {
        let spec = KernelSpec::Image {
            path: "/nonexistent".into(),
            modules: None,
        };
        assert_eq!(
            build_plan_key(&spec, &BuildOptions::default()).unwrap(),
            None
        );
    }
}
