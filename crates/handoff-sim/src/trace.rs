//! The log a node's or a reader's view keeps of what it answered, for
//! traces.

use std::cell::RefCell;
use std::fmt::Write as _;

use handoff_core::Platform;

use crate::model::SimPlatform;

/// Lines noted as a view answers, each stamped with the virtual clock's time
/// counted from an origin.
pub struct TraceLog {
    clock: SimPlatform,
    origin: u64,
    lines: RefCell<Vec<String>>,
}

impl TraceLog {
    /// An empty log on `clock`, whose times count from `origin`.
    pub fn new(clock: &SimPlatform, origin: u64) -> TraceLog {
        TraceLog {
            clock: clock.clone(),
            origin,
            lines: RefCell::new(Vec::new()),
        }
    }

    /// Note `line` at the clock's current time.
    pub fn note(&self, line: String) {
        let t = self.clock.now_ms() - self.origin;
        self.lines.borrow_mut().push(format!("t={t:>4} ms  {line}"));
    }

    /// The last `n` lines, one an indented row, after a count of those left
    /// out; `(none)` when nothing was noted.
    pub fn show(&self, n: usize) -> String {
        let lines = self.lines.borrow();
        if lines.is_empty() {
            return "    (none)\n".to_string();
        }
        let skip = lines.len().saturating_sub(n);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "    ... {skip} earlier calls");
        }
        for line in &lines[skip..] {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}
