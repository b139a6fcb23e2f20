//! The guest image recipe (`images/default.yaml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::yaml::{self, Diagnostics, ReadError, Seg, Severity};

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recipe {
    /// Host programs copied into the initramfs with their libraries.
    #[serde(default)]
    pub initramfs: Vec<String>,
    /// Host programs copied onto the tools disk (/tools/bin) with their libraries.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Extra files for the tools disk.
    #[serde(default)]
    pub files: Vec<ExtraFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ExtraFile {
    /// Absolute, or relative to the recipe's directory.
    pub src: PathBuf,
    /// Relative path below /tools in the guest.
    pub dst: PathBuf,
}

/// The largest file a recipe's `files:` may stage (default: 256 MiB). The tools disk holds
/// programs and small data; the image key hashes every staged file on every run, so a
/// multi-gigabyte file would cost that much reading each time (and `/dev/zero` never ends).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// A recipe file larger than this is refused before it is read (1 MiB).
const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// What a `files:` source is on this machine, as [`Recipe::load`] checks it before anything
/// reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A regular file (after following symlinks) of this many bytes.
    File { len: u64 },
    /// Anything else, described: "a directory", "a character device", "a FIFO", ...
    Other(&'static str),
    /// It cannot be looked at: why (`No such file or directory (os error 2)`).
    Unreadable(String),
}

impl Source {
    /// `path` on this machine (following symlinks; never opened, so a FIFO cannot block).
    pub fn of(path: &Path) -> Source {
        match std::fs::metadata(path) {
            Err(e) => Source::Unreadable(e.to_string()),
            Ok(m) if m.is_file() => Source::File { len: m.len() },
            Ok(m) => Source::Other(crate::kernel::file_kind(m.file_type())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("read image recipe {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: ReadError,
    },
    /// Every problem found, one `file:line:column: message` each, and a count line.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Recipe {
    /// Reads, parses and checks the recipe at `path`, and checks each `files:` source on
    /// this machine ([`Source::of`]).
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let read_err = |source| RecipeError::Read {
            path: path.into(),
            source,
        };
        // Read whole below: `--recipe /dev/zero` would never end.
        let refuse = |why: String| read_err(std::io::Error::other(why).into());
        match Source::of(path) {
            Source::File { len } if len > MAX_RECIPE_BYTES => {
                return Err(refuse(format!(
                    "it is {len} bytes; a recipe is a short YAML file (at most {} KiB)",
                    MAX_RECIPE_BYTES >> 10
                )))
            }
            Source::Other(what) => return Err(refuse(format!("it is {what}, not a file"))),
            _ => {}
        }
        let text = yaml::read_text(path).map_err(read_err)?;
        Self::parse_with(&text, path, &Source::of)
    }

    /// Parses and checks recipe text, reporting every problem at once; `path` names the
    /// file in messages and relative `src` paths are resolved against its directory. The
    /// sources themselves are not looked at (see [`Recipe::load`]).
    pub fn parse(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        Self::parse_with(text, path, &|_| Source::File { len: 0 })
    }

    /// [`Recipe::parse`], with `source` telling what each resolved `files:` source is: one
    /// that is not a regular file of at most [`MAX_FILE_BYTES`] is a problem at its `src`.
    pub fn parse_with(
        text: &str,
        path: &Path,
        source: &dyn Fn(&Path) -> Source,
    ) -> Result<Recipe, RecipeError> {
        let mut diags = Diagnostics::new(&path.display().to_string());
        let mut recipe = if text.trim().is_empty() {
            // Nothing asked for: the image has only what crashrig always puts in.
            Recipe::default()
        } else {
            let needs = "one of `initramfs`, `tools` or `files`";
            let Some((mut tree, root)) = yaml::parse_map(text, &mut diags, "recipe", needs) else {
                return Err(RecipeError::Invalid(diags));
            };
            let mut read = yaml::deserialize_all::<Recipe>(&mut tree, root, &[]);
            read.report(text, &tree, &mut diags);
            let Some(recipe) = read.value.take() else {
                return Err(RecipeError::Invalid(diags));
            };
            let mut problems = Vec::new();
            check(&recipe, &mut problems);
            check_sources(&recipe, base_dir(path), source, &mut problems);
            for (path, message) in problems {
                if !read.damaged(&tree, &path) {
                    let node = tree.locate(&path, &read.removed).unwrap_or(root);
                    diags.push(text, Severity::Error, tree.span(node), message);
                }
            }
            recipe
        };
        if diags.error_count() > 0 {
            diags.sort();
            return Err(RecipeError::Invalid(diags));
        }
        let base = base_dir(path);
        for f in &mut recipe.files {
            f.src = resolve_src(base, &f.src);
        }
        Ok(recipe)
    }
}

fn base_dir(recipe: &Path) -> &Path {
    recipe.parent().unwrap_or(Path::new("."))
}

fn resolve_src(base: &Path, src: &Path) -> PathBuf {
    if src.is_relative() {
        base.join(src)
    } else {
        src.to_path_buf()
    }
}

/// Every `files:` source that is not a regular file crashrig may read whole: a device or a
/// FIFO would be read forever (or block), a huge file would be read on every run.
fn check_sources(
    recipe: &Recipe,
    base: &Path,
    source: &dyn Fn(&Path) -> Source,
    problems: &mut Vec<(Vec<Seg>, String)>,
) {
    for (i, f) in recipe.files.iter().enumerate() {
        let src = resolve_src(base, &f.src);
        let shown = src.display();
        let why = match source(&src) {
            Source::File { len } if len <= MAX_FILE_BYTES => continue,
            Source::File { len } => format!(
                "is {} MiB; a staged file may be at most {} MiB",
                len.div_ceil(1 << 20),
                MAX_FILE_BYTES >> 20
            ),
            Source::Other(what) => {
                format!("is {what}; `files` copies regular files only, one entry per file")
            }
            Source::Unreadable(why) => format!("cannot be read: {why}"),
        };
        problems.push((
            vec![
                Seg::Key("files".into()),
                Seg::Index(i),
                Seg::Key("src".into()),
            ],
            format!("file `src` `{shown}` {why}"),
        ));
    }
}

/// Every entry that could make the image build write outside its staging directory.
fn check(recipe: &Recipe, problems: &mut Vec<(Vec<Seg>, String)>) {
    for (section, names) in [("initramfs", &recipe.initramfs), ("tools", &recipe.tools)] {
        for (i, name) in names.iter().enumerate() {
            // A name is looked up on PATH and staged as bin/NAME: a `/` would make the
            // staged path the host path itself (and copy the file onto itself).
            if name.is_empty()
                || name.contains(['/', '\0'])
                || name == "."
                || name == ".."
                || name.chars().any(char::is_control)
            {
                problems.push((
                    vec![Seg::Key(section.into()), Seg::Index(i)],
                    format!(
                        "`{section}` entry `{name}` must be a program name found on PATH, such \
                         as `fio`; to add a file by its path use \
                         `files: [{{ src: {name}, dst: bin/NAME }}]`"
                    ),
                ));
            }
        }
    }
    for (i, f) in recipe.files.iter().enumerate() {
        if f.dst.as_os_str().is_empty()
            || f.dst.is_absolute()
            || f.dst
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            problems.push((
                vec![
                    Seg::Key("files".into()),
                    Seg::Index(i),
                    Seg::Key("dst".into()),
                ],
                format!(
                    "file `dst` must be a relative path inside /tools, got `{}`",
                    f.dst.display()
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shipped_recipe() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/default.yaml");
        let recipe = Recipe::load(&path).unwrap();
        assert!(recipe.tools.iter().any(|t| t == "fio"));
        assert_eq!(recipe.initramfs, vec!["dropbear".to_string()]);
    }

    #[test]
    fn rejects_unknown_fields_with_a_location() {
        let err = Recipe::parse("tools: [fio]\nbinaries: [x]\n", Path::new("r.yaml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r.yaml:2:1: unknown field `binaries`, expected one of `initramfs`, `tools`, `files`\n  \
             |\n2 | binaries: [x]\n  | ^^^^^^^^\n\nerror: 1 problem in r.yaml"
        );
    }

    #[test]
    fn rejects_escaping_destinations_and_resolves_sources() {
        let err = Recipe::parse(
            "files: [{src: a, dst: ../etc/passwd}]",
            Path::new("/r/x.yaml"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "/r/x.yaml:1:23: file `dst` must be a relative path inside /tools, got `../etc/passwd`"
            ),
            "{err}"
        );
        let err = Recipe::parse(
            "tools: [fio, /usr/local/bin/fsstress]\n",
            Path::new("/r/x.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string().lines().next().unwrap(),
            "/r/x.yaml:1:14: `tools` entry `/usr/local/bin/fsstress` must be a program name \
             found on PATH, such as `fio`; to add a file by its path use \
             `files: [{ src: /usr/local/bin/fsstress, dst: bin/NAME }]`"
        );
        for bad in ["..", "../x", "a/b", ""] {
            let text = format!("initramfs: [dropbear, '{bad}']\n");
            let err = Recipe::parse(&text, Path::new("r.yaml")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("r.yaml:1:23: `initramfs` entry `{bad}` must be")),
                "{bad}: {err}"
            );
        }
        // Every problem at once.
        let err = Recipe::parse(
            "tools: [/bin/a, b, ../c]\nfiles: [{src: x, dst: /etc/x}]\nextra: 1\n",
            Path::new("r.yaml"),
        )
        .unwrap_err()
        .to_string();
        let heads: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("r.yaml:"))
            .map(|l| l.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            heads,
            ["r.yaml:1:9", "r.yaml:1:20", "r.yaml:2:23", "r.yaml:3:1"]
        );
        let ok = Recipe::parse("files: [{src: a, dst: bin/a}]", Path::new("/r/x.yaml")).unwrap();
        assert_eq!(ok.files[0].src, PathBuf::from("/r/a"));
    }

    /// `src: /dev/zero` made crashrig read until the host ran out of memory, and a FIFO
    /// hung it: sources that are not regular files of a sane size are refused at their line.
    #[test]
    fn sources_that_are_not_small_regular_files_are_refused_at_their_line() {
        let text = "files:\n  - { src: /dev/zero, dst: bin/zero }\n  - { src: fifo, dst: bin/f }\n  \
                    - { src: big.img, dst: big }\n  - { src: gone, dst: g }\n  - { src: ok, dst: ok }\n  \
                    - { src: dir, dst: d }\n";
        let kinds = |p: &Path| match p.to_str().unwrap() {
            "/dev/zero" => Source::Other("a character device"),
            "/r/fifo" => Source::Other("a FIFO"),
            "/r/big.img" => Source::File {
                len: MAX_FILE_BYTES + 1,
            },
            "/r/ok" => Source::File {
                len: MAX_FILE_BYTES,
            },
            "/r/dir" => Source::Other("a directory"),
            _ => Source::Unreadable("No such file or directory (os error 2)".into()),
        };
        let err = Recipe::parse_with(text, Path::new("/r/x.yaml"), &kinds)
            .unwrap_err()
            .to_string();
        let heads: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("/r/x.yaml:"))
            .collect();
        assert_eq!(
            heads,
            [
                "/r/x.yaml:2:12: file `src` `/dev/zero` is a character device; `files` copies \
                 regular files only, one entry per file",
                "/r/x.yaml:3:12: file `src` `/r/fifo` is a FIFO; `files` copies regular files \
                 only, one entry per file",
                "/r/x.yaml:4:12: file `src` `/r/big.img` is 257 MiB; a staged file may be at \
                 most 256 MiB",
                "/r/x.yaml:5:12: file `src` `/r/gone` cannot be read: No such file or directory \
                 (os error 2)",
                "/r/x.yaml:7:12: file `src` `/r/dir` is a directory; `files` copies regular \
                 files only, one entry per file",
            ],
            "{err}"
        );

        // The real look-up, which never opens the source (a FIFO would block the open).
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str()))
            .unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(Source::of(&fifo), Source::Other("a FIFO"));
        assert_eq!(
            Source::of(Path::new("/dev/zero")),
            Source::Other("a character device")
        );
        assert_eq!(Source::of(dir.path()), Source::Other("a directory"));
        std::fs::write(dir.path().join("f"), b"abc").unwrap();
        assert_eq!(Source::of(&dir.path().join("f")), Source::File { len: 3 });
        let recipe = dir.path().join("r.yaml");
        std::fs::write(
            &recipe,
            "files: [{ src: fifo, dst: bin/f }, { src: f, dst: f }]\n",
        )
        .unwrap();
        let err = Recipe::load(&recipe).unwrap_err().to_string();
        assert!(
            err.contains("r.yaml:1:16: file `src`") && err.contains("is a FIFO"),
            "{err}"
        );
        assert!(err.contains("error: 1 problem"), "{err}");
        let err = Recipe::load(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            crate::report::error_chain(&err),
            "read image recipe /dev/zero: it is a character device, not a file"
        );
    }
}
