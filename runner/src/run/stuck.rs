//! What a plan that missed its deadline was stuck on, while the guest still answers: the
//! helper's state read over a new connection. A helper stopped by a signal (a step's
//! `kill -STOP $PPID`) is the scenario's doing, not a kernel hang; one blocked in the kernel
//! (D state) is a hang, and where it waits (wchan, kernel stack) is what a kernel developer
//! wants to see first.

/// A shell script for the guest: one `task` line per helper process (`crashrig-guest exec`,
/// matched on its whole command line so this script's own never counts) and per task in D
/// state, `pid<TAB>state<TAB>helper<TAB>wchan<TAB>comm`, each D-state task followed by its
/// kernel stack as `stack<TAB>pid<TAB>frame` lines.
pub const SCRIPT: &str = r#"cd /proc || exit 1
for p in [0-9]*; do
  read -r s < "$p/stat" 2>/dev/null || continue
  st=${s##*) }; st=${st%% *}
  comm=${s#*(}; comm=${comm%)*}
  h=0
  [ "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" = "crashrig-guest exec " ] && h=1
  [ "$h" = 1 ] || [ "$st" = D ] || continue
  w=$(cat "$p/wchan" 2>/dev/null)
  printf 'task\t%s\t%s\t%s\t%s\t%s\n' "$p" "$st" "$h" "${w:--}" "$comm"
  [ "$st" = D ] || continue
  while read -r _ f; do printf 'stack\t%s\t%s\n' "$p" "$f"; done < "$p/stack" 2>/dev/null
done
exit 0"#;

/// One task [`SCRIPT`] reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    pid: u32,
    state: char,
    helper: bool,
    wchan: String,
    comm: String,
    stack: Vec<String>,
}

/// The judgement on a guest that answers while its plan is past the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stuck {
    /// A helper is stopped by a signal (state T or t): the scenario's or something else in
    /// the guest's doing, an infrastructure error. The text names it.
    Stopped(String),
    /// The kernel holds the plan: what is blocked and where (may be empty when nothing is in
    /// D state, e.g. a step spinning in the kernel or waiting on a lock in S state).
    Hang(String),
}

/// Kernel stack frames shown per blocked task.
const FRAMES: usize = 6;
/// Blocked tasks named besides the helpers.
const OTHERS: usize = 3;

fn parse(output: &str) -> Vec<Task> {
    let mut tasks: Vec<Task> = Vec::new();
    for line in output.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["task", pid, state, helper, wchan, comm @ ..] => {
                let (Ok(pid), Some(state)) = (pid.parse(), state.chars().next()) else {
                    continue;
                };
                tasks.push(Task {
                    pid,
                    state,
                    helper: *helper == "1",
                    wchan: if *wchan == "-" || *wchan == "0" {
                        String::new()
                    } else {
                        wchan.to_string()
                    },
                    comm: comm.join("\t"),
                    stack: Vec::new(),
                });
            }
            ["stack", pid, frame] => {
                if let Some(t) = tasks.iter_mut().rev().find(|t| pid.parse() == Ok(t.pid)) {
                    // `func+0x12/0x40`: the offsets say nothing to a reader of the summary.
                    let name = frame.split('+').next().unwrap_or(frame).trim();
                    if !name.is_empty() {
                        t.stack.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    tasks
}

/// `comm` (pid N) in `wchan`; kernel stack: a <- b <- c
fn blocked(t: &Task) -> String {
    let mut s = format!(
        "`{}` (pid {}) is blocked in the kernel (D state)",
        t.comm, t.pid
    );
    if !t.wchan.is_empty() {
        s.push_str(&format!(" in {}", t.wchan));
    }
    if !t.stack.is_empty() {
        let shown: Vec<&str> = t.stack.iter().take(FRAMES).map(String::as_str).collect();
        s.push_str(&format!("; kernel stack: {}", shown.join(" <- ")));
        if t.stack.len() > FRAMES {
            s.push_str(" <- ...");
        }
    }
    s
}

/// Judges [`SCRIPT`]'s output.
pub fn judge(output: &str) -> Stuck {
    let tasks = parse(output);
    let stopped: Vec<&Task> = tasks
        .iter()
        .filter(|t| t.helper && matches!(t.state, 'T' | 't'))
        .collect();
    if !stopped.is_empty() {
        let pids: Vec<String> = stopped.iter().map(|t| t.pid.to_string()).collect();
        let traced = stopped.iter().all(|t| t.state == 't');
        return Stuck::Stopped(format!(
            "the guest helper (pid {}) is {}, not blocked in the kernel: something in the guest \
             stopped it (a step's `kill -STOP $PPID`?); the guest answers a new connection",
            pids.join(", "),
            if traced {
                "stopped by a tracer (state t)"
            } else {
                "stopped by a signal (state T)"
            }
        ));
    }
    let mut d: Vec<&Task> = tasks.iter().filter(|t| t.state == 'D').collect();
    // The helper first: it is what the plan waits on.
    d.sort_by_key(|t| !t.helper);
    let mut parts: Vec<String> = d.iter().take(OTHERS).map(|t| blocked(t)).collect();
    if d.len() > OTHERS {
        parts.push(format!("{} more tasks in D state", d.len() - OTHERS));
    }
    Stuck::Hang(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_helper_stopped_by_sigstop_is_not_a_hang() {
        let out = "task\t231\tT\t1\tdo_signal_stop\tcrashrig-guest\n\
                   task\t240\tS\t1\tdo_sys_poll\tcrashrig-guest\n";
        assert_eq!(
            judge(out),
            Stuck::Stopped(
                "the guest helper (pid 231) is stopped by a signal (state T), not blocked in \
                 the kernel: something in the guest stopped it (a step's `kill -STOP $PPID`?); \
                 the guest answers a new connection"
                    .into()
            )
        );
    }

    #[test]
    fn a_helper_in_d_state_is_a_hang_with_its_wchan_and_stack() {
        let out = "task\t88\tD\t0\tio_schedule\tkworker/u4:2\n\
                   task\t231\tD\t1\tsync_inodes_sb\tcrashrig-guest\n\
                   stack\t231\tsync_inodes_sb+0x1a2/0x2c0\n\
                   stack\t231\titerate_supers+0x8c/0xe0\n\
                   stack\t231\tksys_sync+0x40/0xa0\n";
        let Stuck::Hang(why) = judge(out) else {
            panic!("a hang")
        };
        assert_eq!(
            why,
            "`crashrig-guest` (pid 231) is blocked in the kernel (D state) in sync_inodes_sb; \
             kernel stack: sync_inodes_sb <- iterate_supers <- ksys_sync; \
             `kworker/u4:2` (pid 88) is blocked in the kernel (D state) in io_schedule"
        );
    }

    #[test]
    fn a_blocked_task_without_wchan_shows_its_stack() {
        let out = "task\t5\tD\t1\t-\tcrashrig-guest\nstack\t5\tksys_sync+0x40/0xa0\n";
        assert_eq!(
            judge(out),
            Stuck::Hang(
                "`crashrig-guest` (pid 5) is blocked in the kernel (D state); kernel stack: \
                 ksys_sync"
                    .into()
            )
        );
    }

    #[test]
    fn nothing_blocked_and_nothing_stopped_is_a_hang_with_nothing_to_add() {
        let out = "task\t231\tS\t1\thrtimer_nanosleep\tcrashrig-guest\n";
        assert_eq!(judge(out), Stuck::Hang(String::new()));
        assert_eq!(judge(""), Stuck::Hang(String::new()));
    }

    #[test]
    fn many_blocked_tasks_are_counted_past_the_first_few() {
        let out: String = (1..=5)
            .map(|p| format!("task\t{p}\tD\t0\t-\tt{p}\n"))
            .collect();
        let Stuck::Hang(why) = judge(&out) else {
            panic!("a hang")
        };
        assert!(why.ends_with("; 2 more tasks in D state"), "{why}");
    }
}
