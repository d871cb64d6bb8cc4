//! Progress lines on standard error while long work runs (`sios audit
//! export`, `sios audit verify`, `sios memory import`): one line, redrawn at most every
//! [`REDRAW`] once the work has run for [`QUIET_FOR`], and erased when it
//! ends, so a quick command shows nothing. Only on a terminal: a piped or
//! logged standard error gets no progress lines.

use sios_audit::progress::Progress;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long work runs before its progress is shown.
const QUIET_FOR: Duration = Duration::from_millis(500);
/// The shortest time between two redraws.
const REDRAW: Duration = Duration::from_millis(200);

/// What is counted.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    Records,
    Items,
    Bytes,
}

/// One progress line for one piece of work.
pub struct Meter {
    state: Arc<Mutex<State>>,
}

struct State {
    what: &'static str,
    unit: Unit,
    started: Instant,
    drawn: Option<Instant>,
}

impl Meter {
    /// A meter for `what` ("exporting the audit log"), or `None` when
    /// standard error is not a terminal.
    pub fn on_terminal(what: &'static str, unit: Unit) -> Option<Meter> {
        std::io::stderr().is_terminal().then(|| Meter {
            state: Arc::new(Mutex::new(State {
                what,
                unit,
                started: Instant::now(),
                drawn: None,
            })),
        })
    }

    /// The callback the work reports to.
    pub fn progress(&self) -> Progress {
        let state = self.state.clone();
        Progress::new(move |done, total| {
            let Ok(mut state) = state.lock() else { return };
            let now = Instant::now();
            let due = match state.drawn {
                None => now.duration_since(state.started) >= QUIET_FOR,
                Some(at) => now.duration_since(at) >= REDRAW,
            };
            if due {
                state.drawn = Some(now);
                let text = line(state.what, state.unit, done, total);
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{text}");
                let _ = err.flush();
            }
        })
    }
}

impl Drop for Meter {
    /// Erases the line, so that what the command prints next starts clean.
    fn drop(&mut self) {
        if self.state.lock().is_ok_and(|s| s.drawn.is_some()) {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// "exporting the audit log: 1,234,567 of 5,000,000 records (24%)".
pub fn line(what: &str, unit: Unit, done: u64, total: u64) -> String {
    let percent = (done.min(total) * 100).checked_div(total).unwrap_or(100);
    let amounts = match unit {
        Unit::Records => format!("{} of {} records", grouped(done), grouped(total)),
        Unit::Items => format!("{} of {} items", grouped(done), grouped(total)),
        Unit::Bytes => {
            let mb = |b: u64| b as f64 / 1e6;
            format!("{:.1} of {:.1} MB", mb(done), mb(total))
        }
    };
    format!("{what}: {amounts} ({percent}%)")
}

/// `n` with a comma between each group of three digits.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_how_far_in_words_and_percent() {
        assert_eq!(
            line(
                "exporting the audit log",
                Unit::Records,
                1_234_567,
                5_000_000
            ),
            "exporting the audit log: 1,234,567 of 5,000,000 records (24%)"
        );
        assert_eq!(
            line("verifying", Unit::Bytes, 120_500_000, 450_000_000),
            "verifying: 120.5 of 450.0 MB (26%)"
        );
        assert_eq!(line("x", Unit::Records, 0, 0), "x: 0 of 0 records (100%)");
        assert_eq!(line("x", Unit::Records, 7, 5), "x: 7 of 5 records (100%)");
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (123_456, "123,456"),
        ] {
            assert_eq!(grouped(n), s);
        }
    }
}
