//! The three loaders through the one layer: snapshots of what a user sees for bad files
//! (paths redacted), and property tests feeding them arbitrary bytes and damaged good files.

use std::path::{Path, PathBuf};

use crate::image::Recipe;
use crate::kernel::spec::PathKind;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn matrix(text: &str) -> Result<(), String> {
    let files = |p: &Path| {
        if p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("nope.yaml") {
            PathKind::File
        } else {
            PathKind::Missing
        }
    };
    crate::matrix::load_str(text, "m.yaml", Path::new("/m"), &files)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn recipe(text: &str) -> Result<(), String> {
    Recipe::parse(text, Path::new("r.yaml"))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn scenario(text: &str) -> Result<(), String> {
    crate::scenario::load_str(text, "s.yaml")
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What `crashrig` prints for `path` (the chain of a read error, or the diagnostics).
fn shown(err: &(dyn std::error::Error + 'static)) -> String {
    crate::report::error_chain(err)
}

#[test]
fn diagnostics_snapshots() {
    let scenario_file = repo().join("tests/bad/wrong-types.yaml");
    let tmp = tempfile::tempdir().unwrap();
    let binary = tmp.path().join("binary.yaml");
    std::fs::write(
        &binary,
        b"name: t\nsteps:\n  - run: { command: \"\xff\xfe\" }\n",
    )
    .unwrap();
    let deep = format!("name: t\nsteps: {}{}\n", "[".repeat(70), "]".repeat(70));
    let cases = [
        (
            "scenario_wrong_types",
            shown(&crate::scenario::load_file(&scenario_file).unwrap_err()),
        ),
        (
            "scenario_not_utf8",
            shown(&crate::scenario::load_file(&binary).unwrap_err()),
        ),
        ("scenario_deep", scenario(&deep).unwrap_err()),
        (
            "matrix_every_problem",
            matrix(
                "name: seed\niterations: 2000000\nkernels:\n  - debian:6.1\n  \
                 - { spec: debian:6.1, kconfg: [debug] }\nscenarios: [a.yaml, nope.yaml]\n\
                 parameters:\n  filesystem: [xfs, xfs]\n  Threads: [1]\nname: again\n",
            )
            .unwrap_err(),
        ),
        (
            "matrix_syntax",
            matrix("name: x\nkernels: [debian:6.1\nscenarios: [a.yaml]\n").unwrap_err(),
        ),
        (
            "recipe_every_problem",
            recipe(
                "initramfs: [dropbear, ../../bin/sh]\ntools: [fio, /usr/local/bin/fsstress]\n\
                 files:\n  - { src: a, dst: /etc/passwd }\n  - { src: b }\nbinaries: [x]\n",
            )
            .unwrap_err(),
        ),
    ];
    let filters = vec![(r"(/[\w.-]+)+/(binary|wrong-types)\.yaml", "[path]/$2.yaml")];
    for (name, text) in cases {
        insta::with_settings!({filters => filters.clone()}, {
            insta::assert_snapshot!(name, text);
        });
    }
}

/// Random edits of `text`: insert, delete, duplicate or replace a short range with a piece
/// of YAML.
fn mutate(text: &str, edits: &[(usize, usize, usize, &str)]) -> String {
    let mut text = text.to_string();
    for &(op, a, b, piece) in edits {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len().max(1);
        let (a, b) = (a % n, b % n);
        let (lo, hi) = (a.min(b), a.max(b).min(a.min(b) + 40).min(chars.len()));
        let head: String = chars[..lo].iter().collect();
        text = match op % 4 {
            0 => head + piece + &chars[lo..].iter().collect::<String>(),
            1 => head + &chars[hi..].iter().collect::<String>(),
            2 => chars[..hi].iter().chain(&chars[lo..]).collect(),
            _ => head + piece + &chars[hi..].iter().collect::<String>(),
        };
    }
    text
}

/// Every failure names the file, a line and a column, and ends with the count line.
fn located(origin: &str, shown: &str) -> Result<(), String> {
    let head = shown.split(':').collect::<Vec<_>>();
    let ok = head.len() > 3
        && head[0] == origin
        && head[1].parse::<usize>().is_ok()
        && head[2].parse::<usize>().is_ok()
        && shown
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("error: "));
    if ok {
        Ok(())
    } else {
        Err(shown.to_string())
    }
}

const PIECES: &[&str] = &[
    "",
    " ",
    "\n",
    "\t",
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "\"",
    "'",
    "#",
    "|",
    ">",
    "~",
    "-1",
    "99999999999999999999",
    "1e999",
    "x",
    "é",
    "\r\n",
    "? ",
    "<<: *a",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\u{feff}",
    "\0",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn loaders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        for (origin, result) in [("s.yaml", scenario(&text)), ("m.yaml", matrix(&text)), ("r.yaml", recipe(&text))] {
            if let Err(shown) = result {
                proptest::prop_assert!(located(origin, &shown).is_ok(), "{}", shown);
            }
        }
    }

    #[test]
    fn damaged_matrix_and_recipe_files_never_panic(
        edits in proptest::collection::vec(
            (0usize..4, proptest::num::usize::ANY, proptest::num::usize::ANY, proptest::sample::select(PIECES)),
            1..6,
        )
    ) {
        let m = std::fs::read_to_string(repo().join("tests/matrix/seed.yaml")).unwrap();
        if let Err(shown) = matrix(&mutate(&m, &edits)) {
            proptest::prop_assert!(located("m.yaml", &shown).is_ok(), "{}", shown);
        }
        let r = std::fs::read_to_string(repo().join("images/default.yaml")).unwrap();
        if let Err(shown) = recipe(&mutate(&r, &edits)) {
            proptest::prop_assert!(located("r.yaml", &shown).is_ok(), "{}", shown);
        }
    }
}

#[test]
fn a_key_written_twice_in_a_free_form_map_is_an_error_at_the_repeat() {
    let err = matrix(
        "name: seed\nkernels: [debian:6.1]\nscenarios: [a.yaml]\n\
         parameters:\n  filesystem: [xfs]\n  filesystem: [ext4]\n",
    )
    .unwrap_err();
    assert!(
        err.contains("m.yaml:6:3: duplicate key `filesystem` (first written at line 5, column 3)"),
        "{err}"
    );
    let err = scenario(
        "name: t\nparameters:\n  jobs: { default: 1 }\n  jobs: { default: 2 }\n\
         steps:\n  - run: { command: \"echo ${jobs}\" }\n",
    )
    .unwrap_err();
    // The scenario's parameters had their own check already; it still answers first.
    assert!(
        err.contains("s.yaml:4:3: parameter `jobs` is declared twice"),
        "{err}"
    );
}
