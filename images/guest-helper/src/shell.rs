//! The command line of a `run` or `spawn` step, for the guest's shell.
//!
//! The guest's `/bin/sh` is Debian's busybox-static, built with `FEATURE_SH_STANDALONE`: its
//! shell runs a busybox applet for any command with an applet's name *before* it looks at
//! `PATH`. A scenario's `mke2fs -O journal_dev /dev/vdb` ran busybox's mke2fs (which ignores
//! `-O` and makes a plain ext2) although e2fsprogs' mke2fs is on the tools disk, first in
//! `PATH`. Shell functions come before applets in that lookup, so the command is preceded by
//! one function per program that `PATH` finds before any busybox applet of its name:
//! `mke2fs() { /tools/bin/mke2fs "$@"; }`. The command itself is left as the user wrote it.
//!
//! What this does not reach: a nested `sh -c`, `exec NAME` and applets that start programs
//! themselves (`xargs`, `env`, `timeout`) still find the applet; naming the program by its
//! path (`/tools/bin/mke2fs`) always works (docs/scenario-format.md says so).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `command` preceded by the functions that make `PATH`'s programs win over busybox applets
/// of the same name, for the directories of `path` (a `PATH` value) in order.
#[cfg(test)]
pub fn command_line(path: &str, command: &str) -> String {
    format!("{}{command}", prelude_for(path))
}

/// The functions (one line each, possibly none) that go before every command for `path`.
pub fn prelude_for(path: &str) -> String {
    prelude(&programs(path))
}

/// Every program in the directories of `path`, in `PATH` order (the first of a name is the
/// one `PATH` finds): name and path.
fn programs(path: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let Some(name) = name.to_str() else { continue };
            out.push((name.to_string(), Path::new(dir).join(name)));
        }
    }
    out
}

fn is_busybox_link(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|target| target.file_name().is_some_and(|n| n == "busybox"))
}

/// The functions for `programs` (in `PATH` order): a name gets one when the first program of
/// that name is not a busybox applet link and a later one is (busybox has that applet). Only
/// names found more than once are looked at, so a step costs a few `readlink`s.
fn prelude(programs: &[(String, PathBuf)]) -> String {
    let mut by_name: BTreeMap<&str, Vec<&Path>> = BTreeMap::new();
    for (name, path) in programs {
        by_name.entry(name.as_str()).or_default().push(path);
    }
    let mut out = String::new();
    for (name, paths) in by_name {
        let [first, later @ ..] = paths.as_slice() else {
            continue;
        };
        if later.is_empty() || !is_function_name(name) || is_busybox_link(first) {
            continue;
        }
        if !later.iter().any(|p| is_busybox_link(p)) {
            continue;
        }
        let Some(path) = first.to_str().filter(|p| is_plain_path(p)) else {
            continue;
        };
        out.push_str(&format!("{name}() {{ {path} \"$@\"; }}\n"));
    }
    out
}

/// A name busybox ash accepts for a function: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A path that needs no quoting in a shell word.
fn is_plain_path(path: &str) -> bool {
    path.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A tools dir with a real mke2fs and fio, and a busybox dir with applet links for mke2fs,
    /// sleep and mkfs.ext2 (not a function name) and a real program of its own.
    fn tree() -> (tempfile::TempDir, String) {
        let root = tempfile::tempdir().unwrap();
        let tools = root.path().join("tools/bin");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for p in ["mke2fs", "fio", "mkfs.ext2"] {
            std::fs::write(tools.join(p), "").unwrap();
        }
        std::fs::write(bin.join("busybox"), "").unwrap();
        std::fs::write(bin.join("dropbear"), "").unwrap();
        for applet in ["mke2fs", "sleep", "mkfs.ext2"] {
            symlink("/bin/busybox", bin.join(applet)).unwrap();
        }
        let path = format!("{}:{}", tools.display(), bin.display());
        (root, path)
    }

    #[test]
    fn a_program_found_before_an_applet_of_its_name_gets_a_function() {
        let (root, path) = tree();
        let line = command_line(&path, "mke2fs -O journal_dev /dev/vdb");
        let tools = root.path().join("tools/bin/mke2fs");
        assert_eq!(
            line,
            format!(
                "mke2fs() {{ {} \"$@\"; }}\nmke2fs -O journal_dev /dev/vdb",
                tools.display()
            )
        );
    }

    #[test]
    fn applets_found_first_and_programs_without_an_applet_are_left_to_path() {
        let (root, path) = tree();
        // busybox first: its applet is what PATH finds too, nothing to correct.
        let bin = root.path().join("bin");
        let tools = root.path().join("tools/bin");
        let reversed = format!("{}:{}", bin.display(), tools.display());
        assert_eq!(command_line(&reversed, "sleep 1"), "sleep 1");
        // fio, dropbear and sleep get no function; mkfs.ext2 cannot have one.
        let prelude = prelude(&programs(&path));
        assert_eq!(prelude.lines().count(), 1, "{prelude}");
        assert!(prelude.starts_with("mke2fs() "), "{prelude}");
    }

    #[test]
    fn the_prelude_makes_busybox_ash_run_the_path_program() {
        // The host's busybox: Debian's busybox-static, the guest's shell.
        // The test suite's set-up installs it (the guest image is made from it).
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: apt-get install busybox-static"
        );
        let root = tempfile::tempdir().unwrap();
        let (tools, bin) = (root.path().join("tools"), root.path().join("bin"));
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let real = tools.join("mke2fs");
        std::fs::write(&real, "#!/bin/sh\necho real \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(busybox, bin.join("mke2fs")).unwrap();
        let path = format!("{}:{}", tools.display(), bin.display());
        let line = command_line(&path, "mke2fs -O journal_dev x");
        let out = std::process::Command::new(busybox)
            .args(["sh", "-c", &line])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "real -O journal_dev x\n"
        );
    }

    #[test]
    fn function_names_are_what_ash_accepts() {
        assert!(is_function_name("mke2fs"));
        assert!(is_function_name("_x1"));
        assert!(!is_function_name("mkfs.ext2"));
        assert!(!is_function_name("1x"));
        assert!(!is_function_name(""));
        assert!(!is_function_name("a-b"));
    }
}
