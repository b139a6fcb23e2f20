//! Kernels: spec parsing, Debian prebuilt packages, and (with the build issue) source trees,
//! kconfig fragments, patch series and the build cache.

pub mod debian;
pub mod spec;

pub use spec::{KernelSpec, ResolvedKernel};
