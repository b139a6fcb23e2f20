//! The guest image recipe (`images/default.yaml`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    #[error("cannot read image recipe {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: file `dst` must be a relative path inside /tools, got `{dst}`")]
    BadDst { path: PathBuf, dst: String },
    #[error(
        "{path}:{line}:{column}: `{section}` entry `{name}` must be a program name found on \
         PATH, such as `fio`; to add a file by its path use \
         `files: [{{ src: {name}, dst: bin/NAME }}]`"
    )]
    NotAProgramName {
        path: PathBuf,
        line: usize,
        column: usize,
        section: &'static str,
        name: String,
    },
}

impl Recipe {
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        let mut recipe: Recipe = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            RecipeError::Parse {
                path: path.into(),
                line,
                column,
                message: e.to_string(),
            }
        })?;
        let positions = crate::matrix::locate::Positions::of(text);
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
                    let (line, column) = positions.find(&[section.into(), i.into()]);
                    return Err(RecipeError::NotAProgramName {
                        path: path.into(),
                        line,
                        column,
                        section,
                        name: name.clone(),
                    });
                }
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for f in &mut recipe.files {
            if f.dst.is_absolute()
                || f.dst
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(RecipeError::BadDst {
                    path: path.into(),
                    dst: f.dst.display().to_string(),
                });
            }
            if f.src.is_relative() {
                f.src = base.join(&f.src);
            }
        }
        Ok(recipe)
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
            "r.yaml:2:1: unknown field `binaries`, expected one of `initramfs`, `tools`, `files` at line 2 column 1"
        );
    }

    #[test]
    fn rejects_escaping_destinations_and_resolves_sources() {
        let err = Recipe::parse(
            "files: [{src: a, dst: ../etc/passwd}]",
            Path::new("/r/x.yaml"),
        )
        .unwrap_err();
        assert!(matches!(err, RecipeError::BadDst { .. }), "{err}");
        let err = Recipe::parse(
            "tools: [fio, /usr/local/bin/fsstress]\n",
            Path::new("/r/x.yaml"),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "/r/x.yaml:1:14: `tools` entry `/usr/local/bin/fsstress` must be a program name \
             found on PATH, such as `fio`; to add a file by its path use \
             `files: [{ src: /usr/local/bin/fsstress, dst: bin/NAME }]`"
        );
        for bad in ["..", "../x", "a/b", ""] {
            let text = format!("initramfs: [dropbear, '{bad}']\n");
            let err = Recipe::parse(&text, Path::new("r.yaml")).unwrap_err();
            assert!(
                matches!(
                    err,
                    RecipeError::NotAProgramName {
                        section: "initramfs",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let ok = Recipe::parse("files: [{src: a, dst: bin/a}]", Path::new("/r/x.yaml")).unwrap();
        assert_eq!(ok.files[0].src, PathBuf::from("/r/a"));
    }
}
