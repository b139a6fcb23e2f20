//! Guest images: a small initramfs (busybox, dropbear, the crashrig-guest helper, init) and a
//! read-only ext4 "tools" disk (fio, xfsprogs, e2fsprogs, btrfs-progs, dmsetup and their
//! libraries), both content-addressed in the cache; plus, per kernel, a modules archive appended
//! to the initramfs.

pub mod cpio;
pub mod recipe;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use recipe::{Recipe, RecipeError, MAX_FILE_BYTES};

use crate::cache::{Cache, CacheError, Contents};
use crate::host::{self, MissingTool};
use crate::kernel::ResolvedKernel;

/// Bump when the layout of the image changes in a way its inputs do not show.
const FORMAT: &str = "crashrig-image-v2";

/// The serial of the tools disk; scenario device names may not use it.
pub const TOOLS_SERIAL: &str = "crashrig-tools";

/// The helper's `boot-init` is the guest's whole start-up (one boot path: no shell script
/// behind it). Kernel command-line words with `=` (crashrig_key, crashrig_modules) reach it
/// through init's environment.
const INITTAB: &str = "::sysinit:/bin/crashrig-guest boot-init
::ctrlaltdel:/sbin/reboot -f
::shutdown:/bin/sync
";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
const GROUP: &str = "root:x:0:\n";
const PROFILE: &str =
    "export PATH=/tools/bin:/bin:/sbin:/usr/bin:/usr/sbin\nexport LD_LIBRARY_PATH=/tools/lib\n";

/// Modules the image carries for each kernel (with their dependencies), when the kernel has
/// them as modules rather than built in. Which are loaded at boot is chosen per scenario.
pub const IMAGE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    // The agent channel's port (`crashrig_guest::channel`); init loads it after virtio_pci.
    "virtio_console",
    "xfs",
    "ext4",
    "btrfs",
    "dm_mod",
    "dm_flakey",
];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    MissingTool(#[from] MissingTool),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("the guest helper is missing: {0}")]
    Helper(String),
    #[error(
        "kernel modules in {dir} have no modules.dep; run `depmod -b <root> <release>` for them"
    )]
    NoModulesDep { dir: PathBuf },
    #[error(
        "module {path} is compressed in a format crashrig cannot unpack (only .ko and .ko.xz)"
    )]
    ModuleCompression { path: PathBuf },
    #[error("stage {path} into the image: the path leaves the staging directory")]
    OutsideStaging { path: PathBuf },
    #[error("stage {path} into the image: it is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "stage {path} into the image: it is {} MiB; a staged file may be at most {} MiB",
        len.div_ceil(1 << 20),
        MAX_FILE_BYTES >> 20
    )]
    TooBig { path: PathBuf, len: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A built guest image.
#[derive(Debug, Clone, PartialEq)]
pub struct GuestImage {
    /// Content hash of every input.
    pub key: String,
    pub initramfs: PathBuf,
    pub tools_disk: PathBuf,
    /// The guest's SSH host key (`ssh-ed25519 AAAA...`), checked on every connection.
    pub host_key: String,
}

/// The recipe shipped with crashrig.
pub fn default_recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/default.yaml")
}

/// Builds (or finds in the cache) the image described by `recipe_path`.
pub fn prepare(recipe_path: &Path, helper: &Path, cache: &Cache) -> Result<GuestImage, ImageError> {
    let recipe = Recipe::load(recipe_path)?;
    let busybox = host::require("busybox")?;
    let dropbearkey = host::require("dropbearkey")?;

    let mut initramfs_files = BTreeMap::new(); // guest path -> host path
    for prog in &recipe.initramfs {
        let path = host::require(prog)?;
        initramfs_files.insert(path.clone(), path.clone());
        for lib in shared_libraries(&path)? {
            initramfs_files.insert(lib.clone(), lib);
        }
    }
    let mut tools_files = BTreeMap::new(); // path below /tools -> host path
    let mut add_with_libs = |dst: PathBuf, src: &Path| -> Result<(), ImageError> {
        for lib in shared_libraries(src)? {
            let name = lib.file_name().unwrap_or_default();
            tools_files.insert(Path::new("lib").join(name), lib.clone());
        }
        tools_files.insert(dst, src.to_path_buf());
        Ok(())
    };
    for prog in &recipe.tools {
        let path = host::require(prog)?;
        add_with_libs(Path::new("bin").join(prog), &path)?;
    }
    for f in &recipe.files {
        add_with_libs(f.dst.clone(), &f.src)?;
    }

    let mut hasher = Sha256::new();
    hasher.update(FORMAT);
    hash_file(&mut hasher, recipe_path)?;
    for (label, files) in [("initramfs", &initramfs_files), ("tools", &tools_files)] {
        hasher.update(label);
        for (dst, src) in files.iter() {
            hasher.update(dst.as_os_str().as_encoded_bytes());
            hash_file(&mut hasher, src)?;
        }
    }
    hash_file(&mut hasher, &busybox)?;
    hash_file(&mut hasher, helper)?;
    let key = hex::encode(&hasher.finalize()[..16]);

    let dest = cache.dir("images")?.join(&key);
    if !cache
        .lookup(
            &dest,
            &["initramfs.cpio", "tools.ext4", "host_key.pub"],
            Contents::Hashed,
        )?
        .is_ready()
    {
        let tmp = cache.tempdir()?;
        let entry = tmp.path().join("entry");
        std::fs::create_dir_all(&entry).map_err(io_err(&entry))?;
        let root = tmp.path().join("initramfs");
        stage_initramfs(&root, &busybox, helper, &initramfs_files)?;
        let host_key = root.join("etc/dropbear/host_key");
        run(Command::new(&dropbearkey)
            .args(["-t", "ed25519", "-f"])
            .arg(&host_key))?;
        let public = run(Command::new(&dropbearkey)
            .arg("-y")
            .arg("-f")
            .arg(&host_key))?;
        let public = public
            .lines()
            .find(|l| l.starts_with("ssh-ed25519 "))
            .ok_or_else(|| ImageError::Command {
                command: "dropbearkey -y".into(),
                stderr: public.clone(),
            })?;
        write(&entry.join("host_key.pub"), public.as_bytes())?;
        let out = entry.join("initramfs.cpio");
        let file = private_file(&out)?;
        cpio::archive_dir(&root, io::BufWriter::new(file)).map_err(io_err(&out))?;

        let tools = tmp.path().join("tools");
        // An empty recipe stages nothing here, and mkfs still wants the directory.
        std::fs::create_dir_all(&tools).map_err(io_err(&tools))?;
        for (dst, src) in &tools_files {
            copy_file(src, &staged(&tools, dst)?)?;
        }
        make_ext4(&tools, &entry.join("tools.ext4"))?;
        cache.install(&entry, &dest, Contents::Hashed)?;
    }
    let pub_path = dest.join("host_key.pub");
    let host_key = std::fs::read_to_string(&pub_path)
        .map_err(io_err(&pub_path))?
        .trim()
        .to_string();
    Ok(GuestImage {
        key,
        initramfs: dest.join("initramfs.cpio"),
        tools_disk: dest.join("tools.ext4"),
        host_key,
    })
}

/// Opens `path` to read a staged file: a regular file (after symlinks) of at most
/// [`MAX_FILE_BYTES`]. O_NONBLOCK, so a FIFO put where a file was checked does not block the
/// open (it has no effect on a regular file's reads).
fn open_staged(path: &Path) -> Result<(std::fs::File, std::fs::Metadata), ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err(path))?;
    let meta = file.metadata().map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(ImageError::NotAFile {
            path: path.into(),
            what: crate::kernel::file_kind(meta.file_type()),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ImageError::TooBig {
            path: path.into(),
            len: meta.len(),
        });
    }
    Ok((file, meta))
}

/// Feeds `path`'s content to `hasher` in pieces, never more than [`MAX_FILE_BYTES`] (a file
/// that grows while it is read is cut there).
fn hash_file(hasher: &mut Sha256, path: &Path) -> Result<(), ImageError> {
    use std::io::Read;
    let (file, _) = open_staged(path)?;
    io::copy(&mut file.take(MAX_FILE_BYTES), hasher).map_err(io_err(path))?;
    Ok(())
}

/// A new file only this user can read: archives that hold the guest's SSH host key.
fn private_file(path: &Path) -> Result<std::fs::File, ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

fn write(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(path, data).map_err(io_err(path))
}

/// `root/rel` for a path staged into an image: `rel` may be absolute (a host path kept as the
/// guest path) but never leaves `root` (no `..`).
fn staged(root: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
    use std::path::Component;
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ImageError::OutsideStaging {
                    path: rel.to_path_buf(),
                })
            }
        }
    }
    if out == root {
        return Err(ImageError::OutsideStaging {
            path: rel.to_path_buf(),
        });
    }
    Ok(out)
}

/// Copies `src` (following its symlinks: libraries are usually links to versioned files)
/// to a new file `dst`, keeping the permission bits. Whatever was at `dst` in the staging
/// tree (a busybox applet link to `/bin/busybox`, say) is replaced, never written through:
/// following it would overwrite the host's file.
fn copy_file(src: &Path, dst: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    use std::io::Read;
    // Open the source first: should `dst` be the source itself, the open file keeps its
    // content through the removal below.
    let (input, meta) = open_staged(src)?;
    let mode = meta.permissions();
    if dst.symlink_metadata().is_ok() {
        std::fs::remove_file(dst).map_err(io_err(dst))?;
    }
    // create_new: O_EXCL, which also refuses to follow a symlink at `dst`.
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .map_err(io_err(dst))?;
    io::copy(&mut input.take(MAX_FILE_BYTES), &mut output).map_err(io_err(dst))?;
    output.set_permissions(mode).map_err(io_err(dst))?;
    Ok(())
}

fn stage_initramfs(
    root: &Path,
    busybox: &Path,
    helper: &Path,
    files: &BTreeMap<PathBuf, PathBuf>,
) -> Result<(), ImageError> {
    for dir in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc/dropbear",
        "etc/crashrig",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "mnt",
        "root",
        "tools",
        "lib/modules",
    ] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    copy_file(busybox, &root.join("bin/busybox"))?;
    let applets = run(Command::new(busybox).arg("--list-full"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = staged(root, Path::new(applet))?;
        if link.symlink_metadata().is_err() {
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(io_err(&link))?;
        }
    }
    std::os::unix::fs::symlink("/bin/busybox", root.join("init")).map_err(io_err(root))?;
    copy_file(helper, &root.join("bin/crashrig-guest"))?;
    for (dst, src) in files {
        copy_file(src, &staged(root, dst)?)?;
    }
    write(&root.join("etc/inittab"), INITTAB.as_bytes())?;
    write(&root.join("etc/passwd"), PASSWD.as_bytes())?;
    write(&root.join("etc/group"), GROUP.as_bytes())?;
    write(&root.join("etc/shells"), b"/bin/sh\n")?;
    write(&root.join("etc/profile"), PROFILE.as_bytes())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn make_ext4(dir: &Path, image: &Path) -> Result<(), ImageError> {
    let mkfs = host::require("mkfs.ext4")?;
    let bytes: u64 = walk_size(dir)?;
    let size = (bytes + bytes / 4 + (16 << 20)).div_ceil(1 << 20) << 20;
    let file = std::fs::File::create(image).map_err(io_err(image))?;
    file.set_len(size).map_err(io_err(image))?;
    run(Command::new(mkfs)
        .args([
            "-q",
            "-F",
            "-L",
            TOOLS_SERIAL,
            "-O",
            "^has_journal",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(dir)
        .arg(image))?;
    Ok(())
}

fn walk_size(dir: &Path) -> Result<u64, ImageError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let meta = entry.metadata().map_err(io_err(&entry.path()))?;
        total += if meta.is_dir() {
            walk_size(&entry.path())?
        } else {
            meta.len() + 4096
        };
    }
    Ok(total)
}

/// dropbearkey, busybox --list, ldd and mkfs of the tools disk take seconds.
const TOOL_LIMIT: Duration = Duration::from_secs(10 * 60);
/// Building the guest helper from source.
const CARGO_LIMIT: Duration = Duration::from_secs(60 * 60);

fn run(cmd: &mut Command) -> Result<String, ImageError> {
    crate::process::Tool::new(cmd, TOOL_LIMIT)
        .stdout()
        .map_err(|e| {
            let (command, stderr) = e.parts();
            ImageError::Command { command, stderr }
        })
}

/// Shared libraries of a dynamically linked program (empty for static ones), from `ldd`.
fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let ldd = host::require("ldd")?;
    let out = crate::process::Tool::new(Command::new(ldd).arg(program), TOOL_LIMIT)
        .output()
        .map_err(|e| ImageError::Command {
            command: format!("ldd {}", program.display()),
            stderr: crate::report::error_chain(&e),
        })?;
    // ldd exits 1 for static programs ("not a dynamic executable").
    Ok(parse_ldd(&out.stdout_text()))
}

/// Parses `ldd` output into library paths.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The initrd for `kernel`: the image's initramfs, with the kernel's modules appended as a
/// second cpio archive when it has any (the kernel unpacks concatenated archives in order).
pub fn initrd_for(
    image: &GuestImage,
    kernel: &ResolvedKernel,
    cache: &Cache,
) -> Result<PathBuf, ImageError> {
    let Some(modules_dir) = &kernel.modules_dir else {
        return Ok(image.initramfs.clone());
    };
    let modules = ModulesPlan::read(modules_dir)?;
    let key = initrd_key(image, &kernel.image_sha256, &modules.identity()?);
    let dest = cache.dir("initrds")?.join(&key);
    let initrd = dest.join("initrd.cpio");
    if cache
        .lookup(&dest, &["initrd.cpio"], Contents::Hashed)?
        .is_ready()
    {
        return Ok(initrd);
    }
    let tmp = cache.tempdir()?;
    let stage = tmp.path().join("modules");
    modules.stage(&stage)?;
    let entry = tmp.path().join("entry");
    std::fs::create_dir_all(&entry).map_err(io_err(&entry))?;
    let out = entry.join("initrd.cpio");
    let mut file = io::BufWriter::new(private_file(&out)?);
    let mut base = std::fs::File::open(&image.initramfs).map_err(io_err(&image.initramfs))?;
    io::copy(&mut base, &mut file).map_err(io_err(&out))?;
    let file = cpio::archive_dir(&stage, file).map_err(io_err(&out))?;
    file.into_inner()
        .map_err(|e| ImageError::Io {
            path: out.clone(),
            source: e.into_error(),
        })?
        .flush()
        .map_err(io_err(&out))?;
    cache.install(&entry, &dest, Contents::Hashed)?;
    Ok(initrd)
}

/// The cache key of an initrd: the image, the kernel image and what its modules archive
/// holds (`modules`: [`ModulesPlan::identity`]). A bzImage is often byte-identical after a
/// module is fixed and rebuilt, so the kernel image alone would boot the old module.
fn initrd_key(image: &GuestImage, kernel_sha256: &str, modules: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&image.key);
    // An image rebuilt under its key (its entry was found damaged) has a new SSH host key: an
    // initrd made from the old one would make every guest refuse to be trusted.
    hasher.update(&image.host_key);
    hasher.update(kernel_sha256);
    hasher.update(IMAGE_MODULES.join(","));
    hasher.update(modules);
    hex::encode(&hasher.finalize()[..16])
}

/// The modules of a `lib/modules/<release>` tree that go into an initrd: for each of
/// [`IMAGE_MODULES`] the tree has, its load order, and every file those orders name.
struct ModulesPlan {
    dir: PathBuf,
    modules_dep: String,
    orders: BTreeMap<String, Vec<String>>,
    files: BTreeSet<String>,
}

impl ModulesPlan {
    fn read(dir: &Path) -> Result<ModulesPlan, ImageError> {
        let dep_path = dir.join("modules.dep");
        let modules_dep = std::fs::read_to_string(&dep_path)
            .map_err(|_| ImageError::NoModulesDep { dir: dir.into() })?;
        let orders = load_orders(&modules_dep, IMAGE_MODULES);
        let files = orders.values().flatten().cloned().collect();
        Ok(ModulesPlan {
            dir: dir.into(),
            modules_dep,
            orders,
            files,
        })
    }

    /// What the staged archive holds: modules.dep and each staged file's path and content.
    /// Contents, not mtimes: copies keep mtimes (`cp -a`, rsync), and the files are a few
    /// megabytes, read again only when the initrd is made.
    fn identity(&self) -> Result<String, ImageError> {
        let mut hasher = Sha256::new();
        hasher.update(&self.modules_dep);
        for rel in &self.files {
            hasher.update(rel.as_bytes());
            hasher.update([0]);
            hash_file(&mut hasher, &self.dir.join(rel))?;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    fn stage(&self, stage: &Path) -> Result<(), ImageError> {
        for (name, order) in &self.orders {
            let list: Vec<String> = order.iter().map(|p| uncompressed_name(p)).collect();
            write(
                &stage.join("etc/crashrig/modules").join(name),
                (list.join("\n") + "\n").as_bytes(),
            )?;
        }
        for rel in &self.files {
            let src = self.dir.join(rel);
            let dst = stage.join("lib/modules").join(uncompressed_name(rel));
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            if rel.ends_with(".ko") {
                copy_file(&src, &dst)?;
            } else if rel.ends_with(".ko.xz") {
                let (input, _) = open_staged(&src)?;
                let mut out = std::fs::File::create(&dst).map_err(io_err(&dst))?;
                io::copy(&mut xz2::read::XzDecoder::new(input), &mut out).map_err(io_err(&src))?;
            } else {
                return Err(ImageError::ModuleCompression { path: src });
            }
        }
        Ok(())
    }
}

/// Module name as modprobe spells it: file stem with '-' as '_'.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// For each wanted module found in `modules.dep`, its load order (dependencies first).
pub fn load_orders(modules_dep: &str, wanted: &[&str]) -> BTreeMap<String, Vec<String>> {
    let deps: BTreeMap<String, (String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|l| {
            let (module, deps) = l.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            Some((module_name(module), (module.to_string(), deps)))
        })
        .collect();
    wanted
        .iter()
        .filter_map(|name| {
            let (path, list) = deps.get(*name)?;
            // modules.dep lists the closest dependency first; modprobe loads from the end.
            let mut order: Vec<String> = list.iter().rev().cloned().collect();
            order.push(path.clone());
            Some((name.to_string(), order))
        })
        .collect()
}

fn uncompressed_name(rel: &str) -> String {
    match rel.find(".ko") {
        Some(i) => format!("{}.ko", &rel[..i]),
        None => rel.to_string(),
    }
}

/// The modules init should load for a scenario (those the kernel has as modules; the rest are
/// built in or absent and skipped by init).
pub fn boot_modules(fstypes: &[&str], device_mapper: bool) -> Vec<String> {
    let mut list: Vec<String> = ["virtio_pci", "virtio_blk", "virtio_net"]
        .map(String::from)
        .to_vec();
    for fs in fstypes {
        if IMAGE_MODULES.contains(fs) && !list.iter().any(|m| m == fs) {
            list.push(fs.to_string());
        }
    }
    if device_mapper {
        list.extend(["dm_mod", "dm_flakey"].map(String::from));
    }
    list
}

/// A busybox-only initramfs whose init powers the machine off at once: the KVM probe and the
/// bare-boot benchmark baseline.
pub fn bare_initramfs(cache: &Cache) -> Result<PathBuf, ImageError> {
    let busybox = host::require("busybox")?;
    let data = std::fs::read(&busybox).map_err(io_err(&busybox))?;
    let key = hex::encode(&Sha256::digest(&data)[..8]);
    let dest = cache.dir("images")?.join(format!("bare-{key}"));
    let out = dest.join("bare.cpio");
    if cache
        .lookup(&dest, &["bare.cpio"], Contents::Hashed)?
        .is_ready()
    {
        return Ok(out);
    }
    let tmp = cache.tempdir()?;
    let root = tmp.path().join("root");
    copy_file(&busybox, &root.join("bin/busybox"))?;
    let init = root.join("init");
    write(&init, b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n")?;
    set_mode(&init, 0o755)?;
    let entry = tmp.path().join("entry");
    std::fs::create_dir_all(&entry).map_err(io_err(&entry))?;
    let file = std::fs::File::create(entry.join("bare.cpio")).map_err(io_err(&entry))?;
    cpio::archive_dir(&root, file).map_err(io_err(&entry))?;
    cache.install(&entry, &dest, Contents::Hashed)?;
    Ok(out)
}

/// The static guest helper binary: `$CRASHRIG_GUEST_HELPER`, or built from this workspace
/// (`cargo build --release -p crashrig-guest` with `crt-static`; a no-op when up to date).
pub fn guest_helper() -> Result<PathBuf, ImageError> {
    if let Some(path) = std::env::var_os("CRASHRIG_GUEST_HELPER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::Helper(format!(
                "CRASHRIG_GUEST_HELPER={} is not a file",
                path.display()
            )))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = workspace.join("target/guest");
    let triple = "x86_64-unknown-linux-gnu";
    let built = target_dir.join(triple).join("release/crashrig-guest");
    if !workspace.join("images/guest-helper/Cargo.toml").exists() {
        return Err(ImageError::Helper(
            "set CRASHRIG_GUEST_HELPER to a statically linked crashrig-guest binary".into(),
        ));
    }
    let cargo = host::require("cargo")?;
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "crashrig-guest",
        "--target",
        triple,
        "--target-dir",
    ])
    .arg(&target_dir)
    .current_dir(&workspace)
    // crt-static: rustup cannot fetch a musl target here, so glibc is linked statically.
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    let out = crate::process::Tool::new(&mut cmd, CARGO_LIMIT)
        .output()
        .map_err(|e| ImageError::Helper(crate::report::error_chain(&e)))?;
    if !out.status.success() {
        return Err(ImageError::Helper(format!(
            "cargo build of crashrig-guest failed:\n{}",
            out.stderr_text()
        )));
    }
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_never_writes_outside_or_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        assert_eq!(
            staged(&root, Path::new("/usr/bin/fio")).unwrap(),
            root.join("usr/bin/fio")
        );
        for bad in ["../x", "bin/../../x", "/", ""] {
            assert!(
                matches!(
                    staged(&root, Path::new(bad)),
                    Err(ImageError::OutsideStaging { .. })
                ),
                "{bad}"
            );
        }
        // A link in the staging tree (a busybox applet) pointing at a host file: the copy
        // replaces the link and leaves the host file alone.
        let host_file = tmp.path().join("host-busybox");
        std::fs::write(&host_file, b"host").unwrap();
        let src = tmp.path().join("awk");
        std::fs::write(&src, b"awk").unwrap();
        let link = root.join("usr/bin/awk");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&host_file, &link).unwrap();
        copy_file(&src, &link).unwrap();
        assert_eq!(std::fs::read(&host_file).unwrap(), b"host");
        assert_eq!(std::fs::read(&link).unwrap(), b"awk");
        assert!(!link.symlink_metadata().unwrap().file_type().is_symlink());
        // A file copied onto itself keeps its content (it used to be truncated to 0 bytes).
        copy_file(&src, &src).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), b"awk");
    }

    /// An empty recipe (or `tools: []`) failed with `cannot access .../tools`: nothing had
    /// made the tools staging directory mkfs reads.
    #[test]
    fn an_empty_recipe_builds_an_image() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::at(tmp.path().join("cache"));
        let helper = tmp.path().join("crashrig-guest");
        std::fs::write(&helper, b"not really the helper").unwrap();
        for text in ["", "tools: []\n"] {
            let recipe = tmp.path().join("r.yaml");
            std::fs::write(&recipe, text).unwrap();
            let image =
                prepare(&recipe, &helper, &cache).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(image.tools_disk.is_file() && image.initramfs.is_file());
        }
    }

    /// A device, FIFO or huge file reached the image build whole (`/dev/zero` until the host
    /// ran out of memory; a FIFO blocked forever): reads of staged files stop at the bound.
    #[test]
    fn staged_files_are_regular_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str()))
            .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let dst = tmp.path().join("out/x");
        let mut hasher = Sha256::new();
        for (src, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            let err = hash_file(&mut hasher, src).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "stage {} into the image: it is {what}, not a regular file",
                    src.display()
                )
            );
            assert!(matches!(
                copy_file(src, &dst),
                Err(ImageError::NotAFile { .. })
            ));
        }
        let big = tmp.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        let err = hash_file(&mut hasher, &big).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("it is 257 MiB; a staged file may be at most 256 MiB"),
            "{err}"
        );
        assert!(matches!(
            copy_file(&big, &dst),
            Err(ImageError::TooBig { .. })
        ));
        // Streaming gives the digest of the whole content.
        let small = tmp.path().join("small");
        std::fs::write(&small, b"abc").unwrap();
        let mut hasher = Sha256::new();
        hash_file(&mut hasher, &small).unwrap();
        assert_eq!(hasher.finalize(), Sha256::digest(b"abc"));
    }

    #[test]
    fn ldd_output_parses_to_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
        assert!(parse_ldd("\tstatically linked\n").is_empty());
    }

    #[test]
    fn module_load_order_puts_dependencies_first() {
        let dep = "kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko.xz\n\
                   kernel/lib/libcrc32c.ko.xz:\n\
                   kernel/drivers/md/dm-flakey.ko: kernel/drivers/md/dm-mod.ko\n\
                   kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n";
        let orders = load_orders(dep, &["xfs", "dm_flakey", "virtio_pci", "ext4"]);
        assert_eq!(
            orders["xfs"],
            vec!["kernel/lib/libcrc32c.ko.xz", "kernel/fs/xfs/xfs.ko.xz"]
        );
        assert_eq!(
            orders["dm_flakey"],
            vec![
                "kernel/drivers/md/dm-mod.ko",
                "kernel/drivers/md/dm-flakey.ko"
            ]
        );
        assert_eq!(
            orders["virtio_pci"],
            vec![
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko"
            ]
        );
        assert!(
            !orders.contains_key("ext4"),
            "built-in modules have no entry"
        );
        assert_eq!(
            uncompressed_name("kernel/fs/xfs/xfs.ko.xz"),
            "kernel/fs/xfs/xfs.ko"
        );
    }

    /// A module rebuilt under a byte-identical bzImage booted the old module: the initrd
    /// was keyed on the kernel image only.
    #[test]
    fn the_initrd_key_follows_the_modules_content() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("6.1.0");
        std::fs::create_dir_all(dir.join("kernel/fs/xfs")).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/fs/xfs/xfs.ko:\nkernel/other.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("kernel/fs/xfs/xfs.ko"), b"old xfs").unwrap();
        std::fs::write(dir.join("kernel/other.ko"), b"not staged").unwrap();
        let image = GuestImage {
            key: "img".into(),
            initramfs: "/i".into(),
            tools_disk: "/t".into(),
            host_key: "ssh-ed25519 AAAA".into(),
        };
        let key = || {
            initrd_key(
                &image,
                "bzimage-sha",
                &ModulesPlan::read(&dir).unwrap().identity().unwrap(),
            )
        };
        let old = key();
        assert_eq!(old, key());
        // Same size, same mtime, new content: a new initrd.
        let xfs = dir.join("kernel/fs/xfs/xfs.ko");
        let mtime = std::fs::metadata(&xfs).unwrap().modified().unwrap();
        std::fs::write(&xfs, b"new xfs").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&xfs)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let new = key();
        assert_ne!(old, new);
        // A module the image does not carry changes nothing.
        std::fs::write(dir.join("kernel/other.ko"), b"changed").unwrap();
        assert_eq!(new, key());
        // modules.dep is part of it (another load order is another archive).
        std::fs::write(dir.join("modules.dep"), "kernel/fs/xfs/xfs.ko:\n").unwrap();
        assert_ne!(new, key());
        assert!(matches!(
            ModulesPlan::read(tmp.path()),
            Err(ImageError::NoModulesDep { .. })
        ));
    }

    #[test]
    fn boot_modules_follow_the_scenario() {
        assert_eq!(
            boot_modules(&["xfs"], false),
            vec!["virtio_pci", "virtio_blk", "virtio_net", "xfs"]
        );
        assert_eq!(
            boot_modules(&[], true),
            vec![
                "virtio_pci",
                "virtio_blk",
                "virtio_net",
                "dm_mod",
                "dm_flakey"
            ]
        );
    }
}
