//! Splitting a matrix across machines (`--partition M/N`) and choosing `-j`.
//!
//! Partitioning is count-based, as cargo-nextest's `count:M/N`: cell `i` (0-based, in
//! expansion order) belongs to shard `i % N + 1`. Shards differ in size by at most one cell
//! and neighbouring cells (the same kernel) spread over all shards, so every shard finishes at
//! about the same time. The assignment depends only on the expansion order, so every shard of
//! one matrix file agrees on it without talking to the others.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::model::Cell;

/// Shard `index` of `count`, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("parse partition `{0}`: expected M/N (or count:M/N) such as 2/3")]
    Syntax(String),
    #[error("parse partition `{0}`: hash partitioning is not supported, use count:M/N")]
    Hash(String),
    #[error("use partition `{text}`: M must be between 1 and N ({count})")]
    OutOfRange { text: String, count: u32 },
    #[error("use partition `{0}`: N must be at least 1")]
    ZeroShards(String),
}

/// Parses `M/N` or `count:M/N`.
pub fn parse_partition(text: &str) -> Result<Partition, PartitionError> {
    let t = text.trim();
    if t.starts_with("hash:") {
        return Err(PartitionError::Hash(text.into()));
    }
    let spec = t.strip_prefix("count:").unwrap_or(t);
    let syntax = || PartitionError::Syntax(text.into());
    let (m, n) = spec.split_once('/').ok_or_else(syntax)?;
    let index: u32 = m.trim().parse().map_err(|_| syntax())?;
    let count: u32 = n.trim().parse().map_err(|_| syntax())?;
    if count == 0 {
        return Err(PartitionError::ZeroShards(text.into()));
    }
    if index == 0 || index > count {
        return Err(PartitionError::OutOfRange {
            text: text.into(),
            count,
        });
    }
    Ok(Partition { index, count })
}

impl FromStr for Partition {
    type Err = PartitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_partition(s)
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Partition {
    /// Whether the cell at expansion position `index` (0-based) is in this shard.
    pub fn contains(&self, index: usize) -> bool {
        index % self.count as usize + 1 == self.index as usize
    }

    /// The cells of this shard, in expansion order.
    pub fn select(&self, cells: &[Cell]) -> Vec<Cell> {
        cells
            .iter()
            .filter(|c| self.contains(c.index))
            .cloned()
            .collect()
    }
}

/// Memory the host needs per VM on top of the guest's: QEMU itself, TCG's translation cache.
pub const PER_VM_OVERHEAD: u64 = 512 << 20;

/// Default `-j`: at most one VM per host core and as many as fit in `mem_bytes` at
/// `per_vm_mem` (the guest's memory) plus [`PER_VM_OVERHEAD`] each; at least 1.
pub fn default_jobs(cores: usize, mem_bytes: u64, per_vm_mem: u64) -> usize {
    let by_mem = mem_bytes / per_vm_mem.saturating_add(PER_VM_OVERHEAD).max(1);
    cores
        .min(usize::try_from(by_mem).unwrap_or(usize::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_partition("2/3"), Ok(Partition { index: 2, count: 3 }));
        assert_eq!(
            parse_partition("count:1/1"),
            Ok(Partition { index: 1, count: 1 })
        );
        assert_eq!(
            parse_partition("0/3").unwrap_err().to_string(),
            "use partition `0/3`: M must be between 1 and N (3)"
        );
        assert_eq!(
            parse_partition("4/3"),
            Err(PartitionError::OutOfRange {
                text: "4/3".into(),
                count: 3
            })
        );
        assert_eq!(
            parse_partition("1/0"),
            Err(PartitionError::ZeroShards("1/0".into()))
        );
        assert_eq!(
            parse_partition("hash:1/2"),
            Err(PartitionError::Hash("hash:1/2".into()))
        );
        for bad in ["2", "a/3", "2/", "-1/3", "2/3/4", ""] {
            assert_eq!(
                parse_partition(bad),
                Err(PartitionError::Syntax(bad.into())),
                "{bad}"
            );
        }
        assert_eq!("2/3".parse::<Partition>().unwrap().to_string(), "2/3");
    }

    #[test]
    fn shards_of_a_real_matrix_cover_it_exactly() {
        let cells = crate::matrix::testutil::seed_matrix().cells();
        for count in 1..=8 {
            let mut ids: Vec<String> = (1..=count)
                .flat_map(|index| Partition { index, count }.select(&cells))
                .map(|c| c.id())
                .collect();
            ids.sort();
            let mut all: Vec<String> = cells.iter().map(|c| c.id()).collect();
            all.sort();
            assert_eq!(ids, all, "{count} shards");
        }
        let second: Vec<usize> = Partition { index: 2, count: 3 }
            .select(&cells)
            .iter()
            .map(|c| c.index)
            .collect();
        assert_eq!(second, [1, 4, 7]);
    }

    #[test]
    fn round_robin_in_expansion_order() {
        let p = Partition { index: 2, count: 3 };
        let mine: Vec<usize> = (0..10).filter(|&i| p.contains(i)).collect();
        assert_eq!(mine, [1, 4, 7]);
    }

    proptest! {
        #[test]
        fn every_cell_in_exactly_one_shard(cells in 0usize..200, count in 1u32..=8) {
            let shards: Vec<Partition> =
                (1..=count).map(|index| Partition { index, count }).collect();
            let mut sizes = vec![0usize; count as usize];
            for i in 0..cells {
                let owners: Vec<usize> =
                    (0..shards.len()).filter(|&s| shards[s].contains(i)).collect();
                prop_assert_eq!(owners.len(), 1);
                sizes[owners[0]] += 1;
            }
            // Balanced: shard sizes differ by at most one.
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            prop_assert!(max.unwrap_or(0) - min.unwrap_or(0) <= 1);
        }
    }

    #[test]
    fn jobs_from_cores_and_memory() {
        const G: u64 = 1 << 30;
        // 2 cores, 24 GiB, 2 GiB guests: cores bound.
        assert_eq!(default_jobs(2, 24 * G, 2 * G), 2);
        // 16 cores, 8 GiB, 2 GiB guests: 8 / 2.5 = 3.
        assert_eq!(default_jobs(16, 8 * G, 2 * G), 3);
        // Not even one fits: still 1.
        assert_eq!(default_jobs(4, G, 2 * G), 1);
        assert_eq!(default_jobs(0, 0, 0), 1);
    }
}
