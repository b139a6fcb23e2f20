//! Running scenarios: boot, plan, iterate, classify, report.

pub mod boot;
