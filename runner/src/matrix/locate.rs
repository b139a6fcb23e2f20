//! Where each value of a YAML document is, so semantic errors (found after serde has turned
//! the text into a model without positions) can still be printed as `file:line:column`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// One step of a path from the document root: a map key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

/// 1-based line and column of every value node, by path. Empty when the text does not parse
/// (serde_yaml then reports the syntax error itself, with its own position).
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<Vec<Seg>, (usize, usize)>,
}

enum Frame {
    /// `key`: the key just read, when the next node is its value.
    Map {
        key: Option<String>,
    },
    Seq {
        next: usize,
    },
}

impl Positions {
    pub fn of(text: &str) -> Positions {
        let mut values = HashMap::new();
        let mut stack: Vec<(Frame, Vec<Seg>)> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else {
                return Positions::default();
            };
            let pos = (span.start.line(), span.start.col() + 1);
            let is_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(_)
            );
            let mut path = None;
            if is_node {
                match stack.last_mut() {
                    None => path = Some(Vec::new()),
                    Some((Frame::Map { key }, parent)) => match key.take() {
                        Some(k) => {
                            let mut p = parent.clone();
                            p.push(Seg::Key(k));
                            path = Some(p);
                        }
                        // A key: complex keys (maps as keys) never name a matrix field.
                        None => {
                            *key = Some(match &event {
                                Event::Scalar(v, ..) => v.to_string(),
                                _ => String::new(),
                            });
                        }
                    },
                    Some((Frame::Seq { next }, parent)) => {
                        let mut p = parent.clone();
                        p.push(Seg::Index(*next));
                        *next += 1;
                        path = Some(p);
                    }
                }
            }
            let is_key = is_node && path.is_none();
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let frame = if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { key: None }
                    } else {
                        Frame::Seq { next: 0 }
                    };
                    // A map used as a key has no path of its own; its contents do not matter.
                    let p = path.clone().unwrap_or_default();
                    if let Some(p) = path {
                        values.entry(p).or_insert(pos);
                    }
                    stack.push((frame, p));
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ if !is_key => {
                    if let Some(p) = path {
                        values.entry(p).or_insert(pos);
                    }
                }
                _ => {}
            }
        }
        Positions { values }
    }

    /// Position of the value at `path`, or of its nearest ancestor that exists.
    pub fn find(&self, path: &[Seg]) -> (usize, usize) {
        (0..=path.len())
            .rev()
            .find_map(|n| self.values.get(&path[..n]).copied())
            .unwrap_or((1, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[Seg]) -> Vec<Seg> {
        segs.to_vec()
    }

    #[test]
    fn finds_values_in_block_and_flow_style() {
        let text = "name: m\nkernels:\n  - spec: debian:6.1\n  - { spec: debian:6.12, label: x }\nscenarios: [a.yaml, b.yaml]\n";
        let pos = Positions::of(text);
        assert_eq!(pos.find(&p(&["name".into()])), (1, 7));
        assert_eq!(
            pos.find(&p(&["kernels".into(), 0.into(), "spec".into()])),
            (3, 11)
        );
        assert_eq!(
            pos.find(&p(&["kernels".into(), 1.into(), "label".into()])),
            (4, 33)
        );
        assert_eq!(pos.find(&p(&["scenarios".into(), 1.into()])), (5, 21));
        // Missing: the nearest ancestor.
        assert_eq!(
            pos.find(&p(&["kernels".into(), 1.into(), "patches".into()])),
            (4, 5)
        );
        assert_eq!(pos.find(&p(&["nope".into()])), (1, 1));
    }
}
