//! Which candidates build byte-identical kernels. The driver asks [`ImageIndex::built`] after
//! every build; the answer survives `--resume` because each first sighting of an image is
//! journaled as [`Step::Built`] and [`ImageIndex::from_replay`] reads them back.

use std::collections::{BTreeSet, HashMap};

use super::journal::{Replay, Step};

/// What the driver does with a kernel it just built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Byte-identical to `same_as`'s kernel, which was tested: record an alias, do not run it.
    SameAs(usize),
    /// Not seen before: journal [`Step::Built`] with this sha, then run it.
    New,
    /// This candidate's own image, already journaled: run it.
    Known,
}

/// Image sha-256 to the first candidate that built it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageIndex {
    first: HashMap<String, usize>,
    /// Candidates whose image is recorded.
    recorded: BTreeSet<usize>,
}

impl ImageIndex {
    /// The images a journal recorded, and the candidates that ran without a recorded image
    /// (journals written before images were recorded): build those again, from the cache
    /// normally, and pass them to [`ImageIndex::built`] so later identical kernels are caught.
    pub fn from_replay(replay: &Replay) -> (ImageIndex, Vec<usize>) {
        let mut index = ImageIndex::default();
        let mut ran = BTreeSet::new();
        let mut aliased = BTreeSet::new();
        for e in &replay.entries {
            match &e.step {
                Step::Built { image_sha256 } => {
                    index.note(e.candidate, image_sha256);
                }
                Step::Ran { .. } => {
                    ran.insert(e.candidate);
                }
                Step::Alias { .. } => {
                    aliased.insert(e.candidate);
                }
                Step::Unknown { .. } => {}
            }
        }
        let missing = ran
            .into_iter()
            .filter(|k| !index.recorded.contains(k) && !aliased.contains(k))
            .collect();
        (index, missing)
    }

    fn note(&mut self, candidate: usize, sha: &str) {
        self.first.entry(sha.to_string()).or_insert(candidate);
        self.recorded.insert(candidate);
    }

    /// `candidate` built an image with `sha`.
    pub fn built(&mut self, candidate: usize, sha: &str) -> Seen {
        match self.first.get(sha) {
            Some(&same) if same != candidate => Seen::SameAs(same),
            Some(_) => Seen::Known,
            None => {
                self.note(candidate, sha);
                Seen::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;
    use crate::bisect::journal::{Header, Journal};
    use crate::bisect::model::{Action, Config};
    use crate::bisect::search::{Bisector, Oracle};
    use crate::bisect::sim::SimulatedHistory;

    const LAST: usize = 20;

    /// Doc-only commits build the image of the commit before them.
    fn image(k: usize) -> String {
        let same = match k {
            4 | 5 => 3,
            11..=13 => 10,
            15 => 14,
            k => k,
        };
        format!("sha-{same}")
    }

    fn header() -> Header {
        Header::new("umount-ebusy", "linux@a..linux@b", LAST, Config::default())
    }

    /// One driver step as `crashrig bisect` takes it; false once the bisection is done.
    fn step(
        b: &mut Bisector,
        journal: &mut Journal,
        index: &mut ImageIndex,
        rng: &mut SmallRng,
        asked: &mut Vec<usize>,
    ) -> bool {
        let Action::Test {
            candidate: k,
            iterations,
            stop_at_first_failure,
        } = b.next_action()
        else {
            return false;
        };
        let id = format!("commit-{k}");
        match index.built(k, &image(k)) {
            Seen::SameAs(same) => {
                b.record_alias(k, same).unwrap();
                journal
                    .append(k, &id, Step::Alias { same_as: same })
                    .unwrap();
                return true;
            }
            Seen::New => {
                let image_sha256 = image(k);
                journal
                    .append(k, &id, Step::Built { image_sha256 })
                    .unwrap();
            }
            Seen::Known => {}
        }
        asked.push(k);
        let mut h = SimulatedHistory {
            culprit: 14,
            p: 0.5,
            fp: 0.125,
            rng,
        };
        let outcome = h.test(k, iterations, stop_at_first_failure);
        b.record(k, outcome.clone()).unwrap();
        journal.append(k, &id, outcome.into()).unwrap();
        true
    }

    /// The steps of a bisection interrupted after `cut` steps (never when `None`) and resumed.
    fn bisect(path: &Path, cut: Option<usize>) -> (Vec<(usize, Step)>, Vec<usize>) {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut asked = Vec::new();
        let mut journal = Journal::create(path, &header()).unwrap();
        let mut b = Bisector::new(LAST, Config::default()).unwrap();
        let mut index = ImageIndex::default();
        let mut n = 0;
        while step(&mut b, &mut journal, &mut index, &mut rng, &mut asked) {
            n += 1;
            if Some(n) == cut {
                drop((journal, b, index));
                let (j, replay) = Journal::resume(path, &header()).unwrap();
                journal = j;
                b = Bisector::from_journal(&replay).unwrap();
                let (i, unrecorded) = ImageIndex::from_replay(&replay);
                assert_eq!(unrecorded, Vec::<usize>::new());
                index = i;
            }
        }
        let steps = Journal::replay(path)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.candidate, e.step))
            .collect();
        (steps, asked)
    }

    #[test]
    fn a_resumed_bisection_still_knows_which_kernels_are_identical() {
        let dir = tempfile::tempdir().unwrap();
        let (whole, asked) = bisect(&dir.path().join("whole"), None);
        assert!(
            whole.iter().any(|(_, s)| matches!(s, Step::Alias { .. })),
            "the history should exercise aliases: {whole:?}"
        );
        let cuts = whole.len().min(60);
        for cut in 1..cuts {
            let path = dir.path().join(format!("cut-{cut}"));
            let (resumed, asked_resumed) = bisect(&path, Some(cut));
            assert_eq!(resumed, whole, "interrupted after step {cut}");
            assert_eq!(asked_resumed, asked);
        }
        // An alias is never run: only the first candidate of each image is asked.
        for k in &asked {
            assert_eq!(*k, image_owner(&whole, *k));
        }
    }

    /// The candidate whose image `k` first recorded.
    fn image_owner(steps: &[(usize, Step)], k: usize) -> usize {
        steps
            .iter()
            .find_map(|(c, s)| match s {
                Step::Built { image_sha256 } if *image_sha256 == image(k) => Some(*c),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn an_old_journal_without_images_names_the_candidates_to_look_at_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old");
        bisect(&path, None);
        let mut replay = Journal::replay(&path).unwrap();
        replay
            .entries
            .retain(|e| !matches!(e.step, Step::Built { .. }));
        let (index, unrecorded) = ImageIndex::from_replay(&replay);
        assert_eq!(index, ImageIndex::default());
        let mut ran: Vec<usize> = replay
            .entries
            .iter()
            .filter(|e| matches!(e.step, Step::Ran { .. }))
            .map(|e| e.candidate)
            .collect();
        ran.sort();
        ran.dedup();
        assert_eq!(unrecorded, ran);
    }
}
