//! Loader tests of `parameters:` and `${name}`: whole error texts.

use std::time::Duration;

use super::*;
use crate::scenario::model::{Size, Step};

const KNOBS: &str = "\
name: knobs
description: Kill ${jobs} fio threads after ${load-time}.
parameters:
  jobs: { default: 12, values: [4, 12, 32] }
  iodepth: { default: 2, range: { from: 1, to: 4 } }
  load-time: { default: 1s, values: [200ms, 1s, 3s] }
  cpus: { default: 2, values: [1, 2, 4] }
  memory: 1G
devices: [{ name: scratch, size: 1G }]
filesystem: { type: xfs }
setup: [mkfs]
steps:
  - mount
  - spawn:
      name: load
      command: fio --numjobs=${jobs} --iodepth=${iodepth} $${i} ${HOME}
  - sleep: ${load-time}
  - sleep: { time: \"${load-time}\" }
  - kill: { name: load }
  - umount
";

fn setting(pairs: &[(&str, &str)]) -> Setting {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn command(s: &Scenario) -> &str {
    match &s.steps[1] {
        Step::Spawn(x) => &x.command,
        other => panic!("{}", other.kind()),
    }
}

fn sleep(s: &Scenario, i: usize) -> Option<Duration> {
    match &s.steps[i] {
        Step::Sleep(x) => x.time,
        other => panic!("{}", other.kind()),
    }
}

fn errors(text: &str, overrides: &[(&str, &str)]) -> String {
    match load_str_with(text, "k.yaml", &setting(overrides)) {
        Ok(l) => panic!("loaded: {:?}", l.scenario.setting),
        Err(e) => e.to_string(),
    }
}

#[test]
fn defaults_substitute_into_commands_and_typed_fields() {
    let s = load_str(KNOBS, "k.yaml").unwrap();
    assert_eq!(
        command(&s),
        "fio --numjobs=12 --iodepth=2 ${i} ${HOME}",
        "`$${{` is a literal `${{`; names that are not parameter names stay for the shell"
    );
    assert_eq!(s.description, "Kill 12 fio threads after 1s.");
    assert_eq!(sleep(&s, 2), Some(Duration::from_secs(1)));
    assert_eq!(sleep(&s, 3), Some(Duration::from_secs(1)));
    assert_eq!((s.vm.cpus, s.vm.memory), (2, Size(1 << 30)));
    let names: Vec<&str> = s.parameters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["jobs", "iodepth", "load-time", "cpus", "memory"]);
    assert_eq!(s.parameters[1].values, ["1", "2", "3", "4"]);
    assert_eq!(s.parameters[4].values, ["1G"]);
    assert_eq!(
        s.setting,
        setting(&[
            ("cpus", "2"),
            ("iodepth", "2"),
            ("jobs", "12"),
            ("load-time", "1s"),
            ("memory", "1G")
        ])
    );
}

#[test]
fn overrides_replace_defaults() {
    let over = setting(&[("jobs", "32"), ("load-time", "250ms"), ("cpus", "4")]);
    let s = load_str_with(KNOBS, "k.yaml", &over).unwrap().scenario;
    assert_eq!(command(&s), "fio --numjobs=32 --iodepth=2 ${i} ${HOME}");
    assert_eq!(sleep(&s, 2), Some(Duration::from_millis(250)));
    assert_eq!(s.vm.cpus, 4);
    assert_eq!(s.setting["jobs"], "32");
    // `cpus` and `memory` work on any scenario: they replace what `vm` says.
    let plain = "name: t\nvm: { cpus: 1 }\nsteps: [sync]\n";
    let s = load_str_with(
        plain,
        "t.yaml",
        &setting(&[("cpus", "3"), ("memory", "512M")]),
    )
    .unwrap()
    .scenario;
    assert_eq!((s.vm.cpus, s.vm.memory), (3, Size(512 << 20)));
}

#[test]
fn every_declaration_problem_is_reported_at_once() {
    let text = "\
name: knobs
parameters:
  jobs: { default: 12, values: [4, 12, 12] }
  unused: 3
  Bad: 1
  depth: [1, 2]
  files: { default: 2, values: [1], range: { from: 1, to: 2 } }
  span: { default: 2, range: { from: 1, to: 100000 } }
  cpus: 2
vm: { cpus: 4 }
steps:
  - run: { command: \"fio --numjobs=${jobs} ${jbos} ${depth} ${files} ${span}\" }
";
    assert_eq!(
        errors(text, &[]),
        "\
k.yaml:3:40: value `12` of parameter `jobs` is listed twice
  |
3 |   jobs: { default: 12, values: [4, 12, 12] }
  |                                        ^^

k.yaml:4:3: parameter `unused` is declared but never used: write `${unused}` where its value goes
  |
4 |   unused: 3
  |   ^^^^^^

k.yaml:5:3: parameter name `Bad` must be lowercase letters, digits, `-` or `_`, start with a letter and be at most 40 characters
  |
5 |   Bad: 1
  |   ^^^

k.yaml:6:10: parameter `depth` must be a map such as `{ default: 2, values: [1, 2, 8] }` (the list goes under `values`)
  |
6 |   depth: [1, 2]
  |          ^

k.yaml:7:37: parameter `files` has both `values` and `range`; give one
  |
7 |   files: { default: 2, values: [1], range: { from: 1, to: 2 } }
  |                                     ^^^^^

k.yaml:8:30: `range` of parameter `span` has 100000 values, at most 64
  |
8 |   span: { default: 2, range: { from: 1, to: 100000 } }
  |                              ^

k.yaml:10:13: `vm.cpus` is set by parameter `cpus`; write `cpus: ${cpus}` or leave it out
   |
10 | vm: { cpus: 4 }
   |             ^

k.yaml:12:44: unknown parameter `${jbos}`: declare it under `parameters:`, or write `$${jbos}` for a literal `${jbos}`
   |
12 |   - run: { command: \"fio --numjobs=${jobs} ${jbos} ${depth} ${files} ${span}\" }
   |                                            ^^^^^^^

error: 8 problems in k.yaml"
    );
}

#[test]
fn given_values_are_checked_where_they_land() {
    assert_eq!(
        errors(
            KNOBS,
            &[("load-time", "abc"), ("cpus", "100"), ("nope", "1"), ("memory", "64M")]
        ),
        "\
k.yaml:3:1: a value is given for parameter `nope`, but the scenario neither declares nor uses it (it declares `jobs`, `iodepth`, `load-time`, `cpus`, `memory`)
  |
3 | parameters:
  | ^^^^^^^^^^

k.yaml:7:3: `vm.cpus` is 100, expected 1 to 64 (with `cpus` = `100`)
  |
7 |   cpus: { default: 2, values: [1, 2, 4] }
  |   ^^^^

k.yaml:8:3: `vm.memory` is 64M, at least 256M is needed (with `memory` = `64M`)
  |
8 |   memory: 1G
  |   ^^^^^^

k.yaml:17:12: invalid duration `abc` for sleep step, expected a number with a unit such as 500ms, 2s or 1m (with `load-time` = `abc`)
   |
17 |   - sleep: ${load-time}
   |            ^^^^^^^^^^^^

k.yaml:18:20: invalid duration `abc` for `time` in sleep step, expected a number with a unit such as 500ms, 2s or 1m (with `load-time` = `abc`)
   |
18 |   - sleep: { time: \"${load-time}\" }
   |                    ^^^^^^^^^^^^^^^

error: 5 problems in k.yaml"
    );
    assert_eq!(
        errors("name: t\nsteps: [sync]\n", &[("jobs", "a\nb")]),
        "\
t.yaml:1:1: value `a\nb` given for parameter `jobs` holds a control character (such as a line break)
  |
1 | name: t
  | ^

error: 1 problem in t.yaml"
            .replace("t.yaml", "k.yaml")
    );
}

#[test]
fn declared_values_that_do_not_fit_are_reported_at_the_value() {
    let text = KNOBS
        .replace("[200ms, 1s, 3s]", "[200ms, 1s, soon]")
        .replace("values: [1, 2, 4]", "values: [1, 2, 400]");
    assert_eq!(
        errors(&text, &[]),
        "\
k.yaml:6:49: with `load-time` = `soon` the scenario does not load: 17:12: invalid duration `soon` for sleep step, expected a number with a unit such as 500ms, 2s or 1m (with `load-time` = `soon`)
  |
6 |   load-time: { default: 1s, values: [200ms, 1s, soon] }
  |                                                 ^^^^

k.yaml:7:38: with `cpus` = `400` the scenario does not load: 7:3: `vm.cpus` is 400, expected 1 to 64 (with `cpus` = `400`)
  |
7 |   cpus: { default: 2, values: [1, 2, 400] }
  |                                      ^^^

error: 2 problems in k.yaml"
    );
}

#[test]
fn a_recorded_scenario_reads_dollar_braces_as_they_stand() {
    let s = load_str(KNOBS, "k.yaml").unwrap();
    let json = serde_json::to_string_pretty(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scenario.yaml");
    std::fs::write(&path, json).unwrap();
    let again = load_recorded(&path).unwrap().scenario;
    assert_eq!(command(&again), command(&s));
    assert_eq!(
        (again.steps.clone(), again.vm.clone()),
        (s.steps.clone(), s.vm.clone())
    );
    assert!(again.parameters.is_empty() && again.setting.is_empty());
}

#[test]
fn huge_numbers_are_refused_with_their_bound() {
    let text = "name: t\niterations: 4294967295\niteration-timeout: 1000years\nvm: { memory: 16000T }\nsteps: [sync]\n";
    assert_eq!(
        errors(text, &[]),
        "\
k.yaml:2:13: `iterations` is 4294967295, at most 1000000
  |
2 | iterations: 4294967295
  |             ^^^^^^^^^^

k.yaml:3:20: `iteration-timeout` is 1000years, at most 24h
  |
3 | iteration-timeout: 1000years
  |                    ^^^^^^^^^

k.yaml:4:15: `vm.memory` is 16000T, at most 1T
  |
4 | vm: { memory: 16000T }
  |               ^^^^^^

error: 3 problems in k.yaml"
    );
}

/// Probe 12 (fsparam1.yaml): the documented form, a declared `filesystem` parameter and a
/// `filesystem` map without `type`, was refused with "declares no `filesystem`" and "missing
/// field `type`". The parameter supplies the type; a written type is replaced as before.
#[test]
fn a_declared_filesystem_parameter_supplies_the_type_the_map_leaves_out() {
    const FSPARAM: &str = "\
name: fsparam
parameters:
  filesystem: { default: ext4, values: [ext4, xfs] }
devices: [{ name: scratch, size: 256M }]
filesystem: { device: scratch }
steps:
  - mount
";
    let fs = |over: &[(&str, &str)]| {
        load_str_with(FSPARAM, "k.yaml", &setting(over))
            .map(|l| l.scenario.filesystem.unwrap())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let default = fs(&[]);
    assert_eq!(
        (default.fstype.as_str(), default.device.as_deref()),
        ("ext4", Some("scratch"))
    );
    assert_eq!(fs(&[("filesystem", "xfs")]).fstype, "xfs");
    // Without any `filesystem` map the message stays, and it is right.
    let none = FSPARAM.replace("filesystem: { device: scratch }\n", "");
    assert!(errors(&none, &[]).contains(
        "parameter `filesystem` = `ext4` sets the filesystem type, but the scenario declares no `filesystem`"
    ));
    // A map broken for another reason says what is wrong with it, not that it is missing.
    let broken = FSPARAM.replace("{ device: scratch }", "{ device: scratch, colour: red }");
    let e = errors(&broken, &[]);
    assert!(!e.contains("declares no `filesystem`"), "{e}");
    assert!(e.contains("colour"), "{e}");
}
