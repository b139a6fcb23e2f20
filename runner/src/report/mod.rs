//! Events and the reporters that consume them; the results model.

pub mod durable;
pub mod events;
pub mod results;
pub mod store;
pub mod terminal;
pub mod writer;

pub use events::{Event, EventSink, Reporter};
pub use results::*;

/// `n` and `what`, in the plural unless `n` is 1: "1 boot", "3 boots".
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// An error and its sources, joined the way `main` prints them: "a: b: c".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
