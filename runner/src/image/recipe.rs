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
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = yaml::read_text(path).map_err(|source| RecipeError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks recipe text, reporting every problem at once; `path` names the
    /// file in messages and relative `src` paths are resolved against its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
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
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut recipe.files {
            if f.src.is_relative() {
                f.src = base.join(&f.src);
            }
        }
        Ok(recipe)
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
}
