//! `--patches PATH`: mbox files (`git am` input, what `b4 am` writes), quilt `series` files,
//! directories of `*.patch`, or one patch; each patch becomes one commit in the worktree, so a
//! series can be bisected patch by patch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::KernelError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// A mail with headers: applied with `git am --3way`, keeping its author and message.
    Mail,
    /// A plain diff (quilt style): `git apply --index`, committed with its subject.
    Diff,
}

/// One patch, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchFile {
    /// The file the patch comes from (an mbox holds several).
    pub path: PathBuf,
    /// `(n, total)` inside an mbox with more than one message.
    pub index: Option<(usize, usize)>,
    pub kind: PatchKind,
    /// The mail's `Subject:` (without `[PATCH n/m]`), the diff's first description line, or the
    /// file name.
    pub subject: String,
    /// Leading path components to strip (`-p`; default: 1, what quilt and git write).
    pub strip: u32,
    pub content: Vec<u8>,
}

impl fmt::Display for PatchFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((n, total)) = self.index {
            write!(f, " (message {n}/{total})")?;
        }
        Ok(())
    }
}

/// Expands every `--patches` argument, in order, into single patches.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PatchFile>, KernelError> {
    let mut out = Vec::new();
    for p in paths {
        expand_one(p, 1, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

/// Series may name series; deeper than this is a mistake, not a patch set.
const MAX_SERIES_DEPTH: usize = 16;
/// More single patches than any series crashrig bisects (bounds series that name the same
/// series many times over).
const MAX_PATCHES: usize = 20_000;

/// The largest patch, mbox or series file read (256 MiB: a whole release's mbox is less).
const MAX_PATCH_BYTES: u64 = 256 << 20;

fn read(path: &Path) -> Result<Vec<u8>, KernelError> {
    super::read_input(path, MAX_PATCH_BYTES).map_err(|source| KernelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// `series`: the series files being expanded, outermost first (a series that names itself,
/// directly or not, is an error instead of an endless recursion).
fn expand_one(
    path: &Path,
    strip: u32,
    out: &mut Vec<PatchFile>,
    series: &mut Vec<PathBuf>,
) -> Result<(), KernelError> {
    if out.len() > MAX_PATCHES {
        return Err(KernelError::NotAPatch {
            path: path.to_path_buf(),
            why: format!("the series expand to more than {MAX_PATCHES} patches"),
        });
    }
    if path.is_dir() {
        let file = path.join("series");
        if file.is_file() {
            return expand_series(&file, out, series);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| KernelError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "patch"))
            .collect();
        // Natural order, as `ls -v`: hand-numbered `2-x.patch` before `10-y.patch`.
        files.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)));
        // `git format-patch --cover-letter` writes the series' introduction as a mail with no
        // diff: not a patch.
        files.retain(|f| !is_cover_letter(f));
        if files.is_empty() {
            return Err(KernelError::NotAPatch {
                path: path.to_path_buf(),
                why: "the directory has neither a `series` file nor `*.patch` files".into(),
            });
        }
        for f in files {
            expand_one(&f, 1, out, series)?;
        }
        return Ok(());
    }
    let content = read(path)?;
    let text = String::from_utf8_lossy(&content);
    let is_series_name = path.file_name().is_some_and(|n| n == "series");
    match classify(&text) {
        Kind::Mbox if !is_series_name => {
            let messages = split_mbox(&text);
            let total = messages.len();
            for (i, m) in messages.into_iter().enumerate() {
                out.push(PatchFile {
                    path: path.to_path_buf(),
                    index: (total > 1).then_some((i + 1, total)),
                    kind: PatchKind::Mail,
                    subject: mail_subject(&m).unwrap_or_else(|| file_name(path)),
                    strip,
                    content: m.into_bytes(),
                });
            }
            Ok(())
        }
        Kind::Diff if !is_series_name => {
            out.push(PatchFile {
                path: path.to_path_buf(),
                index: None,
                kind: PatchKind::Diff,
                subject: diff_subject(&text).unwrap_or_else(|| file_name(path)),
                strip,
                content,
            });
            Ok(())
        }
        _ => expand_series(path, out, series),
    }
}

/// Compares names as `ls -v` does: runs of digits by their value (`2` before `10`, then the
/// shorter `1` before `01`), everything else byte by byte.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (run(a), run(b));
                let trim = |d: &[u8]| -> usize { d.iter().take_while(|c| **c == b'0').count() };
                let (da, db) = (&a[..na], &b[..nb]);
                let (va, vb) = (&da[trim(da)..], &db[trim(db)..]);
                let by_value = va.len().cmp(&vb.len()).then_with(|| va.cmp(vb));
                match by_value.then_with(|| na.cmp(&nb)) {
                    Ordering::Equal => {
                        a = &a[na..];
                        b = &b[nb..];
                    }
                    other => return other,
                }
            }
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => {
                    a = &a[1..];
                    b = &b[1..];
                }
                other => return other,
            },
        }
    }
}

/// `0000-cover-letter.patch` of `git format-patch --cover-letter`: a mail without a diff.
fn is_cover_letter(path: &Path) -> bool {
    file_name(path).ends_with("cover-letter.patch")
        && std::fs::read(path).is_ok_and(|c| {
            let text = String::from_utf8_lossy(&c);
            classify(&text) == Kind::Mbox && !has_diff(&text)
        })
}

/// Whether a text holds a diff (`diff --git`, or `---` followed by `+++`).
fn has_diff(text: &str) -> bool {
    let mut prev_minus = false;
    for l in text.lines() {
        if l.starts_with("diff --git ") || (prev_minus && l.starts_with("+++ ")) {
            return true;
        }
        prev_minus = l.starts_with("--- ");
    }
    false
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Mbox,
    Diff,
    Other,
}

fn is_header(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// An mbox starts with a `From ` separator or with mail headers (`From:`, `Subject:`); a diff
/// has `diff --git` or `---`/`+++` lines; anything else may be a series file.
fn classify(text: &str) -> Kind {
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("From ") {
        return Kind::Mbox;
    }
    let headers: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    if !headers.is_empty()
        && headers
            .iter()
            .all(|l| is_header(l) || l.starts_with([' ', '\t']))
        && headers
            .iter()
            .any(|l| l.starts_with("From: ") || l.starts_with("Subject: "))
    {
        return Kind::Mbox;
    }
    if has_diff(text) {
        return Kind::Diff;
    }
    Kind::Other
}

/// Splits an mbox at `From ` separator lines that are followed by a header.
fn split_mbox(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut messages: Vec<String> = Vec::new();
    let mut current = String::new();
    for (i, line) in lines.iter().enumerate() {
        let is_sep = line.starts_with("From ")
            && lines
                .get(i + 1)
                .is_some_and(|next| is_header(next.trim_end()));
        if is_sep && !current.trim().is_empty() {
            messages.push(std::mem::take(&mut current));
        }
        current.push_str(line);
    }
    if !current.trim().is_empty() {
        messages.push(current);
    }
    messages
}

/// `Subject:` with folded continuation lines, without `[PATCH v2 1/3]`-style prefixes.
fn mail_subject(mail: &str) -> Option<String> {
    let mut lines = mail.lines().skip_while(|l| !l.starts_with("Subject:"));
    let mut subject = lines
        .next()?
        .trim_start_matches("Subject:")
        .trim()
        .to_string();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            subject.push(' ');
            subject.push_str(l.trim());
        } else {
            break;
        }
    }
    while subject.starts_with('[') {
        match subject.find(']') {
            Some(end) => subject = subject[end + 1..].trim_start().to_string(),
            None => break,
        }
    }
    (!subject.is_empty()).then_some(subject)
}

/// The first description line before the diff of a quilt-style patch.
fn diff_subject(text: &str) -> Option<String> {
    text.lines()
        .take_while(|l| {
            !l.starts_with("diff ") && !l.starts_with("--- ") && !l.starts_with("Index: ")
        })
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("---"))
        .map(|l| l.trim_start_matches("Subject:").trim().to_string())
}

/// A quilt `series` file: one patch per line relative to the file's directory, `#` comments,
/// optional `-pN` after the name (default: `-p1`).
fn expand_series(
    series: &Path,
    out: &mut Vec<PatchFile>,
    open: &mut Vec<PathBuf>,
) -> Result<(), KernelError> {
    let key = std::fs::canonicalize(series).unwrap_or_else(|_| series.to_path_buf());
    if let Some(first) = open.iter().position(|s| *s == key) {
        let chain: Vec<String> = open[first..]
            .iter()
            .chain([&key])
            .map(|p| p.display().to_string())
            .collect();
        return Err(KernelError::NotAPatch {
            path: series.to_path_buf(),
            why: format!("the series names itself: {}", chain.join(" -> ")),
        });
    }
    if open.len() >= MAX_SERIES_DEPTH {
        return Err(KernelError::NotAPatch {
            path: series.to_path_buf(),
            why: format!("series nest deeper than {MAX_SERIES_DEPTH} levels"),
        });
    }
    open.push(key);
    let result = expand_series_lines(series, out, open);
    open.pop();
    result
}

fn expand_series_lines(
    series: &Path,
    out: &mut Vec<PatchFile>,
    open: &mut Vec<PathBuf>,
) -> Result<(), KernelError> {
    let text = String::from_utf8_lossy(&read(series)?).into_owned();
    let dir = series.parent().unwrap_or(Path::new("."));
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut strip = 1;
        for w in words {
            match w.strip_prefix("-p").and_then(|n| n.parse().ok()) {
                Some(n) => strip = n,
                None => {
                    return Err(KernelError::Series {
                        series: series.to_path_buf(),
                        line: i + 1,
                        why: format!("unknown option `{w}` (only -pN is understood)"),
                    })
                }
            }
        }
        let path = dir.join(name);
        if !path.is_file() {
            return Err(KernelError::Series {
                series: series.to_path_buf(),
                line: i + 1,
                why: format!("{} is not a file", path.display()),
            });
        }
        let before = out.len();
        expand_one(&path, strip, out, open)?;
        if out[before..].is_empty() {
            return Err(KernelError::Series {
                series: series.to_path_buf(),
                line: i + 1,
                why: format!("{} holds no patch", path.display()),
            });
        }
        any = true;
    }
    if !any {
        return Err(KernelError::NotAPatch {
            path: series.to_path_buf(),
            why: "it is neither a mail, a diff nor a series file naming patches".into(),
        });
    }
    Ok(())
}

/// The lines of git's output that say what failed (file, hunk, conflict).
pub fn failure_lines(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        .filter(|l| {
            l.starts_with("error:")
                || l.starts_with("fatal:")
                || l.starts_with("CONFLICT")
                || l.starts_with("Patch failed at")
                || l.starts_with("Checking patch")
                || l.starts_with("Hunk #")
        })
        .collect();
    if lines.is_empty() {
        output.trim().to_string()
    } else {
        lines.join("\n")
    }
}

/// git am of one patch, or rev-parse, on a kernel worktree.
const GIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Identity for commits crashrig makes (the user's git config may have none).
pub(crate) fn git_identity(cmd: &mut Command, date: &str) {
    cmd.env("GIT_COMMITTER_NAME", "crashrig")
        .env("GIT_COMMITTER_EMAIL", "crashrig@localhost")
        .env("GIT_COMMITTER_DATE", date)
        .env("GIT_AUTHOR_NAME", "crashrig")
        .env("GIT_AUTHOR_EMAIL", "crashrig@localhost")
        .env("GIT_AUTHOR_DATE", date);
}

/// What a git command that ran said: whether it succeeded, and its stdout then stderr.
struct GitRun {
    ok: bool,
    text: String,
}

/// Runs git on the worktree with `input` on stdin. A git that could not run (or ran past its
/// deadline) is the host's error; a git that ran and failed is reported in [`GitRun`].
fn git_stdin(
    worktree: &Path,
    args: &[&str],
    input: &[u8],
    date: &str,
    mail: bool,
) -> Result<GitRun, KernelError> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(worktree).args(args);
    git_identity(&mut cmd, date);
    if mail {
        // git am keeps the mail's author and date
        cmd.env_remove("GIT_AUTHOR_NAME")
            .env_remove("GIT_AUTHOR_EMAIL")
            .env_remove("GIT_AUTHOR_DATE");
    }
    let out = crate::process::Tool::new(&mut cmd, GIT_LIMIT)
        .stdin(input.to_vec())
        .output()
        .map_err(super::exec::process_error)?;
    Ok(GitRun {
        ok: out.status.success(),
        text: format!("{}{}", out.stdout_text(), out.stderr_text()),
    })
}

/// [`git_stdin`] for a command that must succeed whatever the patch (commit, rev-parse): its
/// failure is the host's, not the patch's.
fn git_must(
    worktree: &Path,
    args: &[&str],
    input: &[u8],
    date: &str,
) -> Result<String, KernelError> {
    let run = git_stdin(worktree, args, input, date, false)?;
    if run.ok {
        Ok(run.text)
    } else {
        Err(KernelError::Command {
            command: format!("git {}", args.join(" ")),
            output: run.text,
        })
    }
}

/// Applies `patches` in order on the worktree's HEAD, one commit each; returns the commits.
/// `date` is used for crashrig's commits so that equal inputs give equal commit ids. On
/// failure the partial `git am` is aborted; the caller resets the worktree.
pub fn apply(
    worktree: &Path,
    patches: &[PatchFile],
    date: &str,
) -> Result<Vec<(PatchFile, String)>, KernelError> {
    let mut done = Vec::new();
    let mut head = git_must(worktree, &["rev-parse", "HEAD"], b"", date)?
        .trim()
        .to_string();
    for p in patches {
        let strip = format!("-p{}", p.strip);
        // Some(git's output) when the patch does not apply.
        let mut failed = None;
        match p.kind {
            PatchKind::Mail => {
                let am = git_stdin(
                    worktree,
                    &["am", "--3way", "--quiet", &strip],
                    &p.content,
                    date,
                    true,
                )?;
                if !am.ok {
                    git_stdin(worktree, &["am", "--abort"], b"", date, true)?;
                    // with --3way, git am may only say that it could not build an ancestor;
                    // git apply --check names the file and hunk
                    let check = git_stdin(
                        worktree,
                        &["apply", "--check", "--verbose", &strip, "-"],
                        &p.content,
                        date,
                        false,
                    )?;
                    let check = if check.ok { String::new() } else { check.text };
                    failed = Some(format!("{}\n{check}", am.text));
                }
            }
            PatchKind::Diff => {
                let applied = git_stdin(
                    worktree,
                    &["apply", "--index", "--verbose", &strip, "-"],
                    &p.content,
                    date,
                    false,
                )?;
                if applied.ok {
                    let message = format!("{}\n\nApplied by crashrig from {}\n", p.subject, p);
                    let commit = [
                        "commit",
                        "--quiet",
                        "--no-verify",
                        "--allow-empty",
                        "-F",
                        "-",
                    ];
                    git_must(worktree, &commit, message.as_bytes(), date)?;
                } else {
                    failed = Some(applied.text);
                }
            }
        }
        // A patch the tree already has: git am --3way skips a mail ("No changes -- Patch
        // already applied") without a commit, a diff fails. Either way it is named: counted
        // as applied it would be a no-op (a bisect candidate identical to the one before).
        let already = match &failed {
            Some(_) => {
                git_stdin(
                    worktree,
                    &["apply", "--check", "-R", &strip, "-"],
                    &p.content,
                    date,
                    false,
                )?
                .ok
            }
            None => false,
        };
        let commit = git_must(worktree, &["rev-parse", "HEAD"], b"", date)?
            .trim()
            .to_string();
        if already || (failed.is_none() && commit == head) {
            return Err(KernelError::PatchDoesNotApply {
                patch: p.to_string(),
                subject: p.subject.clone(),
                details: "it is already applied: the tree has its changes (from the source or \
                          an earlier patch), so it would change nothing; drop it from the series"
                    .into(),
            });
        }
        if let Some(failed) = failed {
            return Err(KernelError::PatchDoesNotApply {
                patch: p.to_string(),
                subject: p.subject.clone(),
                details: failure_lines(&failed),
            });
        }
        head = commit.clone();
        done.push((p.clone(), commit));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL1: &str = "From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Dev One <one@example.org>
Date: Mon, 1 Jan 2024 00:00:00 +0000
Subject: [PATCH v2 1/2] fs: first change
 that is folded

Body line.
From a body line that is not a separator.
---
 a.c | 2 +-
diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -1 +1 @@
-old
+new
--
2.47.0

";
    const MAIL2: &str = "From 2222222222222222222222222222222222222222 Mon Sep 17 00:00:00 2001
From: Dev Two <two@example.org>
Subject: [PATCH v2 2/2] fs: second change

diff --git a/b.c b/b.c
--- a/b.c
+++ b/b.c
@@ -1 +1 @@
-x
+y
";
    const DIFF: &str = "Make umount wait for deferred fput

Index: linux/fs/namespace.c
--- a/fs/namespace.c
+++ b/fs/namespace.c
@@ -1 +1 @@
-a
+b
";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn summary(patches: &[PatchFile], root: &Path) -> Vec<String> {
        patches
            .iter()
            .map(|p| {
                format!(
                    "{} {:?} -p{} {}",
                    p.to_string().replace(&root.display().to_string(), ""),
                    p.kind,
                    p.strip,
                    p.subject
                )
            })
            .collect()
    }

    #[test]
    fn an_mbox_with_two_patches_gives_two_mails() {
        let d = tempfile::tempdir().unwrap();
        let mbox = write(d.path(), "v2.mbx", &format!("{MAIL1}{MAIL2}"));
        let got = expand(&[mbox]).unwrap();
        assert_eq!(
            summary(&got, d.path()),
            [
                "/v2.mbx (message 1/2) Mail -p1 fs: first change that is folded",
                "/v2.mbx (message 2/2) Mail -p1 fs: second change",
            ]
        );
        assert_eq!(String::from_utf8_lossy(&got[0].content), MAIL1);
        assert_eq!(String::from_utf8_lossy(&got[1].content), MAIL2);
    }

    #[test]
    fn a_mail_without_separator_is_one_mail() {
        let d = tempfile::tempdir().unwrap();
        let mail = MAIL2.split_once('\n').unwrap().1;
        let p = write(d.path(), "one.eml", mail);
        assert_eq!(
            summary(&expand(&[p]).unwrap(), d.path()),
            ["/one.eml Mail -p1 fs: second change"]
        );
    }

    #[test]
    fn a_quilt_series_with_comments_and_strip_levels() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "patches/one.diff", DIFF);
        write(d.path(), "patches/sub/two.patch", MAIL2);
        let series = write(
            d.path(),
            "patches/series",
            "# the fix\none.diff   # first\n\n  sub/two.patch -p0\n#disabled.patch\n",
        );
        assert_eq!(
            summary(&expand(&[series]).unwrap(), d.path()),
            [
                "/patches/one.diff Diff -p1 Make umount wait for deferred fput",
                "/patches/sub/two.patch Mail -p0 fs: second change",
            ]
        );
        // the directory holding `series` means the same series
        assert_eq!(expand(&[d.path().join("patches")]).unwrap().len(), 2);
    }

    #[test]
    fn a_series_that_names_itself_is_an_error_not_a_stack_overflow() {
        let d = tempfile::tempdir().unwrap();
        let series = write(d.path(), "series", "series\n");
        let err = expand(std::slice::from_ref(&series))
            .unwrap_err()
            .to_string();
        let real = std::fs::canonicalize(&series).unwrap();
        assert!(
            err.ends_with(&format!(
                "the series names itself: {} -> {}",
                real.display(),
                real.display()
            )),
            "{err}"
        );
        // Through another series, and through a directory holding it.
        write(d.path(), "a/series", "../b/series\n");
        write(d.path(), "b/series", "../a/series\n");
        let err = expand(&[d.path().join("a")]).unwrap_err().to_string();
        assert!(err.contains("the series names itself"), "{err}");
        // The same series named many times over is bounded, not exponential.
        let mut prev = write(
            d.path(),
            "c0/p.patch",
            "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
        );
        for i in 1..=15 {
            let name = prev.strip_prefix(d.path()).unwrap().display().to_string();
            let line = format!("../{name}\n");
            prev = write(d.path(), &format!("c{i}/series"), &line.repeat(4));
        }
        let err = expand(&[prev]).unwrap_err().to_string();
        assert!(err.contains("more than 20000 patches"), "{err}");
    }

    #[test]
    fn a_series_naming_a_missing_patch_says_which_line() {
        let d = tempfile::tempdir().unwrap();
        let series = write(d.path(), "series", "# c\nnope.patch\n");
        assert_eq!(
            expand(std::slice::from_ref(&series))
                .unwrap_err()
                .to_string(),
            format!(
                "read patch series {}:2: {}/nope.patch is not a file",
                series.display(),
                d.path().display()
            )
        );
    }

    #[test]
    fn a_directory_of_patches_is_sorted_and_ignores_other_files() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "p/0002-second.patch", MAIL2);
        write(d.path(), "p/0001-first.patch", MAIL1);
        write(d.path(), "p/README", "not a patch");
        assert_eq!(
            summary(&expand(&[d.path().join("p")]).unwrap(), d.path()),
            [
                "/p/0001-first.patch Mail -p1 fs: first change that is folded",
                "/p/0002-second.patch Mail -p1 fs: second change",
            ]
        );
    }

    #[test]
    fn one_plain_patch_and_several_arguments_keep_their_order() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "fix.diff", DIFF);
        let b = write(d.path(), "two.patch", MAIL2);
        assert_eq!(
            summary(&expand(&[b, a]).unwrap(), d.path()),
            [
                "/two.patch Mail -p1 fs: second change",
                "/fix.diff Diff -p1 Make umount wait for deferred fput",
            ]
        );
    }

    #[test]
    fn failure_lines_keep_the_file_and_hunk() {
        let out = "Applying: fs: second change\nUsing index info to reconstruct a base tree...\nerror: patch failed: b.c:1\nerror: b.c: patch does not apply\nhint: Use 'git am --show-current-patch=diff'\nPatch failed at 0001 fs: second change\n";
        assert_eq!(
            failure_lines(out),
            "error: patch failed: b.c:1\nerror: b.c: patch does not apply\nPatch failed at 0001 fs: second change"
        );
    }

    fn git(dir: &Path, args: &[&str]) {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir).args(args);
        git_identity(&mut cmd, "2000-01-01T00:00:00Z");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    }

    #[test]
    fn patches_become_commits_and_a_bad_one_names_file_and_hunk() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        write(&repo, "a.c", "old\n");
        write(&repo, "b.c", "x\n");
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "base"]);
        let good = expand(&[write(d.path(), "v2.mbx", &format!("{MAIL1}{MAIL2}"))]).unwrap();
        let applied = apply(&repo, &good, "2000-01-01T00:00:00Z").unwrap();
        assert_eq!(applied.len(), 2);
        assert_ne!(applied[0].1, applied[1].1);
        assert_eq!(std::fs::read_to_string(repo.join("a.c")).unwrap(), "new\n");
        assert_eq!(std::fs::read_to_string(repo.join("b.c")).unwrap(), "y\n");

        // a diff that conflicts names the file and hunk
        let bad = expand(&[write(
            d.path(),
            "other.diff",
            "other\n--- a/b.c\n+++ b/b.c\n@@ -1 +1 @@\n-z\n+w\n",
        )])
        .unwrap();
        let err = apply(&repo, &bad, "2000-01-01T00:00:00Z").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "apply patch {}/other.diff (\"other\"):\nChecking patch b.c...\nerror: while searching for:\nerror: patch failed: b.c:1\nerror: b.c: patch does not apply",
                d.path().display()
            )
        );
        assert!(!repo.join(".git/rebase-apply").exists());
    }

    /// A patch the tree already has used to be skipped silently by `git am --3way` when a
    /// mail (counted as applied, no commit) and to fail as "does not apply" when a diff: both
    /// now name the patch as already applied.
    #[test]
    fn a_patch_already_in_the_tree_is_named_whether_mail_or_diff() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        write(&repo, "a.c", "old\n");
        write(&repo, "b.c", "x\n");
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "base"]);
        write(&repo, "b.c", "y\n");
        git(&repo, &["commit", "-qam", "fs: change b"]);
        // a real `git format-patch` mail (with index lines, so --3way can skip it)
        git(&repo, &["format-patch", "-q", "-1", "-o", "../fp"]);
        let mail = std::fs::read_dir(d.path().join("fp"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let want = "it is already applied: the tree has its changes (from the source or an \
                    earlier patch), so it would change nothing; drop it from the series";
        let twice = write(
            d.path(),
            "twice.mbox",
            &std::fs::read_to_string(&mail).unwrap().repeat(2),
        );
        git(&repo, &["reset", "-q", "--hard", "HEAD~1"]);
        let both = expand(&[twice]).unwrap();
        let err = apply(&repo, &both, "2000-01-01T00:00:00Z").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "apply patch {}/twice.mbox (message 2/2) (\"fs: change b\"):\n{want}",
                d.path().display()
            )
        );
        git(&repo, &["reset", "-q", "--hard", "HEAD"]);
        let diff = write(
            d.path(),
            "again.diff",
            "again\n--- a/b.c\n+++ b/b.c\n@@ -1 +1 @@\n-x\n+y\n",
        );
        let twice = expand(&[diff.clone(), diff]).unwrap();
        let err = apply(&repo, &twice, "2000-01-01T00:00:00Z").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "apply patch {}/again.diff (\"again\"):\n{want}",
                d.path().display()
            )
        );
        assert!(!repo.join(".git/rebase-apply").exists());
    }

    #[test]
    fn a_directory_of_patches_is_in_natural_order_without_its_cover_letter() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "ord/10-amend.patch", MAIL2);
        write(d.path(), "ord/2-p2.patch", MAIL1);
        write(d.path(), "ord/1-p1.patch", DIFF);
        write(
            d.path(),
            "ord/0000-cover-letter.patch",
            "From 0000 Mon Sep 17 00:00:00 2001\nFrom: Dev <d@example.org>\n\
             Subject: [PATCH 0/3] *** SUBJECT HERE ***\n\n*** BLURB HERE ***\n\n\
             Dev (3):\n  fs: one\n\n a.c | 2 +-\n 1 file changed\n\n--\n2.47.0\n",
        );
        let names: Vec<String> = expand(&[d.path().join("ord")])
            .unwrap()
            .iter()
            .map(|p| file_name(&p.path))
            .collect();
        assert_eq!(names, ["1-p1.patch", "2-p2.patch", "10-amend.patch"]);
        let mut v = [
            "a10", "a2", "a02", "a1b", "a1", "b", "0001-x", "0010-y", "0002-z",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["0001-x", "0002-z", "0010-y", "a1", "a1b", "a2", "a02", "a10", "b"]
        );
    }
}
