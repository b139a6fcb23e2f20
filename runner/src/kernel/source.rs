//! Kernel sources: `debian-source:6.x` unpacked once into a cached git repository, local git
//! trees at a commit, and crashrig's own worktree of each repository. A user's repository is
//! only read: crashrig works in a bare clone of its own that borrows the user's objects
//! ([`own_clone`]), so its worktree, the commits of applied patches and their reflogs are
//! written under crashrig's cache, never into the user's `.git`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::exec::Exec;
use super::patches::git_identity;
use super::KernelError;
use crate::cache::{Cache, Contents, Lookup};
use crate::host;

/// Date of crashrig's own commits: fixed, so equal trees give equal commit ids.
pub const COMMIT_DATE: &str = "2000-01-01T00:00:00Z";

/// A resolved source: a git repository and the commit to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// A git directory or work tree, usable with `git -C`.
    pub repo: PathBuf,
    /// Full commit id to build (before patches).
    pub commit: String,
    /// What identifies the source in cache keys: the commit, or the Debian package version.
    pub identity: String,
    /// The repository is crashrig's (in the cache): worktrees are added to it and `git
    /// worktree prune` may run in it. A user's repository is only read ([`own_clone`]).
    pub owned: bool,
}

/// `linux-source-6.1`.
pub fn debian_package(series: &str) -> String {
    format!("linux-source-{series}")
}

/// A git ref name for a Debian version (`~` and `:` are not allowed in refs).
pub fn tag_for(package: &str, version: &str) -> String {
    format!("{package}_{}", version.replace([':', '~'], "_"))
}

/// The candidate version of the `linux-source-X` package (fast: no download).
pub fn debian_version(exec: &Exec, series: &str) -> Result<String, KernelError> {
    host::require("apt-get")?;
    let package = debian_package(series);
    let out =
        exec.output(Command::new("apt-cache").args(["show", "--no-all-versions", &package]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .ok_or(KernelError::NoPackage { package })
}

/// Cache identity of `debian-source:<series>` without downloading anything.
pub fn debian_identity(exec: &Exec, series: &str) -> Result<String, KernelError> {
    Ok(format!(
        "{} {}",
        debian_package(series),
        debian_version(exec, series)?
    ))
}

fn git(repo: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo);
    git_identity(&mut cmd, COMMIT_DATE);
    cmd
}

/// `debian-source:<series>`: the package unpacked into a bare git repository with one commit
/// tagged after the package version, created once per version.
pub fn debian_source(
    exec: &Exec,
    series: &str,
    cache: &Cache,
    log: &mut dyn FnMut(&str),
) -> Result<Source, KernelError> {
    host::require("apt-get")?;
    host::require("dpkg-deb")?;
    host::require("git")?;
    let package = debian_package(series);
    let version = debian_version(exec, series)?;
    let tag = tag_for(&package, &version);
    let sources = cache.dir("sources")?;
    let dest = sources.join(format!("{tag}.git"));
    let _lock = crate::cache::lock(&sources.join(format!("{tag}.lock")))?;
    // The repository changes in use (worktrees, patch commits), so its marker hashes
    // nothing; git vouches for the tagged commit instead.
    let mut state = cache.lookup(&dest, &["HEAD"], Contents::Unhashed)?;
    if state.is_ready() && rev_parse(exec, &dest, &tag).is_err() {
        cache.discard(&dest)?;
        state = Lookup::Discarded(format!("{}: tag {tag} unreadable", dest.display()));
    }
    if let Lookup::Discarded(why) = &state {
        log(why);
    }
    if !state.is_ready() {
        let tmp = cache.tempdir()?;
        log(&format!("downloading {package} {version}"));
        exec.run(
            Command::new("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
                .arg(format!("{package}={version}"))
                .current_dir(tmp.path()),
            log,
        )?;
        let deb = super::debian::find_deb(tmp.path())
            .map_err(|source| KernelError::Io {
                path: tmp.path().into(),
                source,
            })?
            .ok_or_else(|| KernelError::NoPackage {
                package: package.clone(),
            })?;
        let root = tmp.path().join("root");
        exec.run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root), log)?;
        let _ = std::fs::remove_file(&deb);
        let tarball = root.join(format!("usr/src/{package}.tar.xz"));
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).map_err(|source| KernelError::Io {
            path: src.clone(),
            source,
        })?;
        log(&format!("unpacking {}", tarball.display()));
        exec.run(
            Command::new("tar")
                .arg("-xJf")
                .arg(&tarball)
                .arg("-C")
                .arg(&src)
                .arg("--strip-components=1"),
            log,
        )?;
        log("committing the unpacked tree");
        exec.run(git(&src).args(["init", "-q"]), log)?;
        // -f: the tarball ships files that the kernel's .gitignore would hide
        exec.run(
            git(&src).args(["-c", "core.compression=1", "add", "-A", "-f", "."]),
            log,
        )?;
        exec.run(
            git(&src).args([
                "-c",
                "gc.auto=0",
                "commit",
                "-q",
                "--no-verify",
                "-m",
                &format!("{package} {version}"),
            ]),
            log,
        )?;
        exec.run(git(&src).args(["tag", &tag]), log)?;
        // keep only the repository: worktrees are checked out from it
        let entry = tmp.path().join("repo.git");
        std::fs::rename(src.join(".git"), &entry).map_err(|source| KernelError::Io {
            path: entry.clone(),
            source,
        })?;
        exec.run(git(&entry).args(["config", "core.bare", "true"]), log)?;
        cache.install(&entry, &dest, Contents::Unhashed)?;
    }
    let commit = rev_parse(exec, &dest, &tag)?;
    Ok(Source {
        repo: dest,
        commit,
        identity: format!("{package} {version}"),
        owned: true,
    })
}

/// `git rev-parse --verify REF^{commit}` in `repo`.
pub fn rev_parse(exec: &Exec, repo: &Path, rev: &str) -> Result<String, KernelError> {
    exec.output(Command::new("git").arg("-C").arg(repo).args([
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ]))
    .ok()
    .filter(|c| !c.is_empty())
    .ok_or_else(|| KernelError::BadRevision {
        repo: repo.to_path_buf(),
        rev: rev.to_string(),
    })
}

/// A local tree at `rev` (default: HEAD). Only reads the user's repository. Without `rev`,
/// a working tree whose tracked files differ from HEAD is refused
/// ([`KernelError::Uncommitted`]): the build would be HEAD's, and the rate reported for
/// `PATH` would be for a kernel without the edits the user just made. Refused rather than
/// warned about: a warning scrolls away above a long run, and `PATH@HEAD` says "HEAD as
/// committed" in one word. Bisection names its commits (`PATH@REF`) and is never refused.
pub fn git_source(exec: &Exec, path: &Path, rev: Option<&str>) -> Result<Source, KernelError> {
    host::require("git")?;
    let repo = std::fs::canonicalize(path).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let commit = rev_parse(exec, &repo, rev.unwrap_or("HEAD"))?;
    if rev.is_none() {
        let cache = crate::cache::Cache::from_env();
        refuse_uncommitted(exec, path, &repo, &commit, cache.root())?;
    }
    Ok(Source {
        identity: commit.clone(),
        repo,
        commit,
        owned: false,
    })
}

/// [`KernelError::Uncommitted`] when tracked files of `repo`'s working tree differ from
/// HEAD (staged or not). Untracked files are not looked at: a new source file only builds
/// through an edit of a tracked Makefile or Kconfig, and trees hold many untracked notes
/// and patches. Nothing is written to the user's repository (`--no-optional-locks`: no
/// index refresh). Bare repositories and trees under crashrig's cache (`cache_root`: its
/// clones and worktrees) are not checked.
fn refuse_uncommitted(
    exec: &Exec,
    path: &Path,
    repo: &Path,
    commit: &str,
    cache_root: &Path,
) -> Result<(), KernelError> {
    let cache_root = std::fs::canonicalize(cache_root).unwrap_or_else(|_| cache_root.into());
    if repo.starts_with(&cache_root) {
        return Ok(());
    }
    let git_q = |args: &[&str]| {
        exec.output(
            Command::new("git")
                .arg("--no-optional-locks")
                .arg("-C")
                .arg(repo)
                .args(args),
        )
    };
    if !git_q(&["rev-parse", "--is-inside-work-tree"]).is_ok_and(|out| out == "true") {
        return Ok(());
    }
    let changed = git_q(&["diff", "--name-only", "-z", "--no-renames", "HEAD", "--"])?;
    let files: Vec<&str> = changed.split('\0').filter(|f| !f.is_empty()).collect();
    if files.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 5;
    let mut list = files
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        list.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    Err(KernelError::Uncommitted {
        path: path.to_path_buf(),
        commit: commit.chars().take(12).collect(),
        files: list,
    })
}

/// crashrig's bare clone of a user's repository at `dest` (made once, in the cache), sharing
/// the user's objects through `objects/info/alternates` (`git clone --shared`: no copy of a
/// kernel's history, and nothing written into the user's repository). New objects (patch
/// commits) go into the clone. The user's later `git gc` keeps every commit their refs still
/// reach; a commit they drop and prune can no longer be checked out, and git says so. A
/// source crashrig owns is returned as it is.
pub fn own_clone(
    exec: &Exec,
    source: &Source,
    dest: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Source, KernelError> {
    if source.owned {
        return Ok(source.clone());
    }
    let objects = Path::new(common_dir(exec, &source.repo)?.trim()).join("objects");
    let alternates = dest.join("objects/info/alternates");
    let borrows = std::fs::read_to_string(&alternates)
        .is_ok_and(|a| a.lines().any(|l| Path::new(l.trim()) == objects));
    if !borrows {
        remove_dir(dest)?;
        log(&format!(
            "cloning {} into {} (sharing its objects)",
            source.repo.display(),
            dest.display()
        ));
        exec.run(
            Command::new("git")
                .args(["clone", "--quiet", "--bare", "--shared", "--no-tags"])
                .arg(&source.repo)
                .arg(dest),
            log,
        )?;
        // An automatic gc here would be harmless to the user's objects, but costs minutes.
        exec.run(git(dest).args(["config", "gc.auto", "0"]), log)?;
    }
    Ok(Source {
        repo: dest.to_path_buf(),
        owned: true,
        ..source.clone()
    })
}

/// Removes `dir` and everything in it, if it is there (crashrig's own, in the cache).
fn remove_dir(dir: &Path) -> Result<(), KernelError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(KernelError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// The absolute path of a repository's (or worktree's) common git directory.
fn common_dir(exec: &Exec, repo: &Path) -> Result<String, KernelError> {
    exec.output(Command::new("git").arg("-C").arg(repo).args([
        "rev-parse",
        "--path-format=absolute",
        "--git-common-dir",
    ]))
}

/// Short stable id of a repository (its common git directory), naming its worktree and
/// build directories.
pub fn repo_id(exec: &Exec, repo: &Path) -> Result<String, KernelError> {
    let digest = Sha256::digest(common_dir(exec, repo)?.as_bytes());
    Ok(hex::encode(&digest[..8]))
}

/// crashrig's worktree of `source.repo` (`<cache>/worktrees/<id>`), checked out at
/// `source.commit` with nothing else in it. Reusing one worktree per repository keeps the
/// mtimes of unchanged files, so `make` stays incremental. Hold the repository's lock.
pub fn checkout(
    exec: &Exec,
    source: &Source,
    worktree: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(), KernelError> {
    let mut repo_common = None;
    if source.owned {
        // forget worktrees whose directories were deleted
        exec.run(git(&source.repo).args(["worktree", "prune"]), log)?;
        let common = common_dir(exec, &source.repo)?;
        ignore_obj_dirs(Path::new(common.trim()))?;
        repo_common = Some(common);
    }
    let ours = worktree.join(".git").is_file()
        && common_dir(exec, worktree)
            .ok()
            .zip(repo_common.or_else(|| common_dir(exec, &source.repo).ok()))
            .is_some_and(|(a, b)| a == b);
    if ours {
        reset(exec, worktree, &source.commit, log)
    } else {
        remove_dir(worktree)?;
        log(&format!(
            "checking out {} into {}",
            source.commit,
            worktree.display()
        ));
        exec.run(
            git(&source.repo)
                .args(["worktree", "add", "--detach", "--force"])
                .arg(worktree)
                .arg(&source.commit),
            log,
        )
    }
}

/// The start of the names of the `make O=` directories crashrig keeps at the top of its
/// worktrees (one per final config). Being a direct child of the source tree makes kbuild
/// name every source and include path relative (`srctree := ..`), so the compiler cache
/// matches identical files across repositories: a git range's first build hits what a
/// `debian-source` build of the same version compiled, and the other way round.
pub const OBJ_DIR_PREFIX: &str = ".crashrig-obj-";

/// Makes git ignore the build directories in every worktree of a repository of crashrig's
/// own (`info/exclude` under its common git directory), so the worktree reads as clean.
fn ignore_obj_dirs(common_dir: &Path) -> Result<(), KernelError> {
    let info = common_dir.join("info");
    let exclude = info.join("exclude");
    let line = format!("/{OBJ_DIR_PREFIX}*");
    let text = std::fs::read_to_string(&exclude).unwrap_or_default();
    if text.lines().any(|l| l == line) {
        return Ok(());
    }
    let io = |source| KernelError::Io {
        path: exclude.clone(),
        source,
    };
    std::fs::create_dir_all(&info).map_err(io)?;
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&line);
    text.push('\n');
    std::fs::write(&exclude, text).map_err(io)
}

/// Puts the worktree at `commit` with no local changes, aborting a half-done `git am`.
/// Only files that differ are rewritten; the build directories ([`OBJ_DIR_PREFIX`]) stay, so
/// the next build is incremental.
pub fn reset(
    exec: &Exec,
    worktree: &Path,
    commit: &str,
    log: &mut dyn FnMut(&str),
) -> Result<(), KernelError> {
    let _ = exec.run(git(worktree).args(["am", "--abort"]), &mut |_| {});
    exec.run(
        git(worktree).args(["checkout", "-q", "--detach", "-f", commit]),
        log,
    )?;
    let keep = format!("/{OBJ_DIR_PREFIX}*");
    exec.run(
        git(worktree).args(["clean", "-q", "-ffdx", "-e", &keep]),
        log,
    )
}

/// Removes crashrig's worktree entirely (after a failure that left it in an unknown state).
pub fn remove_worktree(exec: &Exec, source: &Source, worktree: &Path) {
    let _ = exec.run(
        git(&source.repo)
            .args(["worktree", "remove", "--force"])
            .arg(worktree),
        &mut |_| {},
    );
    let _ = std::fs::remove_dir_all(worktree);
    if source.owned {
        let _ = exec.run(git(&source.repo).args(["worktree", "prune"]), &mut |_| {});
    }
}

/// Runs `script` with `sh -c` in `dir`, with a fixed git identity; its stdout, trimmed. Tests
/// build small git histories with it.
#[cfg(test)]
pub(crate) fn test_sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::test_sh as sh;
    use super::*;

    #[test]
    fn tags_are_valid_ref_names() {
        assert_eq!(
            tag_for("linux-source-6.12", "6.12.117-1~deb12u1"),
            "linux-source-6.12_6.12.117-1_deb12u1"
        );
    }

    /// Every file under the user's `.git` with its contents: what "nothing written" means.
    fn git_dir_state(user: &Path) -> String {
        sh(
            user,
            "find .git -type f | LC_ALL=C sort | xargs sha256sum; find .git -type d | LC_ALL=C sort",
        )
    }

    #[test]
    fn worktree_checkout_leaves_the_users_repository_alone() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("linux");
        std::fs::create_dir(&user).unwrap();
        sh(
            &user,
            "git init -q && echo a > f && echo keep > g && git add . && git commit -qm one && git tag v1 \
             && echo b > f && git commit -qam two && echo dirty > f",
        );
        let before = git_dir_state(&user);
        let exec = Exec::default();
        let src = git_source(&exec, &user, Some("v1")).unwrap();
        assert_eq!(src.commit, sh(&user, "git rev-parse v1"));
        assert!(!src.owned);
        assert!(matches!(
            git_source(&exec, &user, Some("nope")),
            Err(KernelError::BadRevision { .. })
        ));

        let clone = d.path().join("cache/clones/x.git");
        let src = own_clone(&exec, &src, &clone, &mut |_| {}).unwrap();
        assert!(src.owned && src.repo == clone);
        // The clone borrows the user's objects: no copy of the history.
        let alternates = std::fs::read_to_string(clone.join("objects/info/alternates")).unwrap();
        assert!(alternates.contains("linux/.git/objects"), "{alternates}");
        let wt = d.path().join("cache/worktrees/x");
        checkout(&exec, &src, &wt, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "a\n");
        // A commit in crashrig's worktree (as a patch applied there) stays in its clone.
        sh(&wt, "echo patched > g && git commit -qam patch");
        let patch = sh(&wt, "git rev-parse HEAD");
        assert!(Command::new("git")
            .arg("-C")
            .arg(&user)
            .args(["cat-file", "-e", &patch])
            .status()
            .is_ok_and(|s| !s.success()));

        // reuse: only changed files are rewritten, junk is removed
        checkout(&exec, &src, &wt, &mut |_| {}).unwrap();
        // An hour in the past (and so in the index): a rewrite would move it to now, whatever
        // the timestamps' granularity.
        let g_mtime = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(wt.join("g"))
            .unwrap()
            .set_modified(g_mtime)
            .unwrap();
        sh(&wt, "git update-index -q --refresh");
        std::fs::write(wt.join("junk.o"), "x").unwrap();
        // A build directory stays (the next build is incremental) and is no change to git.
        let obj = wt.join(format!("{OBJ_DIR_PREFIX}0123"));
        std::fs::create_dir(&obj).unwrap();
        std::fs::write(obj.join("main.o"), "o").unwrap();
        // The user's `f` is edited: HEAD is built only when named.
        let head = git_source(&exec, &user, Some("HEAD")).unwrap();
        let head = own_clone(&exec, &head, &clone, &mut |_| {}).unwrap();
        checkout(&exec, &head, &wt, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "b\n");
        assert!(!wt.join("junk.o").exists());
        assert_eq!(std::fs::read_to_string(obj.join("main.o")).unwrap(), "o");
        assert_eq!(sh(&wt, "git status --porcelain --ignored=no"), "");
        assert_eq!(
            std::fs::metadata(wt.join("g")).unwrap().modified().unwrap(),
            g_mtime
        );

        // a stale worktree (directory deleted) is pruned and recreated
        std::fs::remove_dir_all(&wt).unwrap();
        checkout(&exec, &src, &wt, &mut |_| {}).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "a\n");

        // Nothing of this is in the user's repository: no worktree, no object, no reflog;
        // their working copy and HEAD did not move.
        assert_eq!(sh(&user, "git worktree list | wc -l"), "1");
        assert_eq!(git_dir_state(&user), before);
        assert_eq!(std::fs::read_to_string(user.join("f")).unwrap(), "dirty\n");
        assert_eq!(sh(&user, "git log -1 --format=%s"), "two");
    }

    /// `--kernel ~/linux` with an edited file built HEAD without the edit, and said nothing.
    #[test]
    fn a_tree_with_uncommitted_changes_is_refused_unless_a_commit_is_named() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("linux");
        std::fs::create_dir(&user).unwrap();
        sh(
            &user,
            "git init -q && echo a > f && echo b > g && git add . && git commit -qm one",
        );
        let exec = Exec::default();
        let head = sh(&user, "git rev-parse HEAD");
        let cache = d.path().join("cache");
        let check = |repo: &Path| refuse_uncommitted(&exec, repo, repo, &head, &cache);
        // Clean, or only untracked files: built as it is.
        std::fs::write(user.join("notes.txt"), "x").unwrap();
        assert!(check(&user).is_ok());
        // An edit, a staged edit: refused, naming the files, the commit and the ways out;
        // the user's .git is not written (no index refresh).
        sh(&user, "echo dirty >> f && echo staged >> g && git add g");
        let before = git_dir_state(&user);
        let err = check(&user).unwrap_err().to_string();
        let p = user.display();
        assert_eq!(
            err,
            format!(
                "{p}: the working tree has uncommitted changes (f, g); a build takes commits \
                 only, so it would test {} without them. Commit the changes, pass them as a \
                 patch (`git -C {p} diff HEAD > fix.patch`, then `--patches fix.patch`), or \
                 build the commit as it is with `{p}@HEAD`",
                &head[..12]
            )
        );
        assert_eq!(git_dir_state(&user), before);
        // Through git_source: refused without a revision, taken with one.
        assert!(matches!(
            git_source(&exec, &user, None),
            Err(KernelError::Uncommitted { .. })
        ));
        assert_eq!(git_source(&exec, &user, Some("HEAD")).unwrap().commit, head);
        // crashrig's own trees are never checked: its bare clone, and a worktree in the cache
        // (even one a failed build left dirty).
        let clone = cache.join("clones/x.git");
        let src = git_source(&exec, &user, Some("HEAD")).unwrap();
        let src = own_clone(&exec, &src, &clone, &mut |_| {}).unwrap();
        assert!(check(&clone).is_ok());
        let wt = cache.join("worktrees/x");
        checkout(&exec, &src, &wt, &mut |_| {}).unwrap();
        std::fs::write(wt.join("f"), "half-applied patch").unwrap();
        let wt = std::fs::canonicalize(&wt).unwrap();
        assert!(check(&wt).is_ok());
        // The same worktree outside the cache would be refused.
        assert!(refuse_uncommitted(&exec, &wt, &wt, &head, Path::new("/nonexistent")).is_err());
    }
}
