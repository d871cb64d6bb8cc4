//! A child's stderr, passed on to the kernel's with bounded cost.
//!
//! Brains are not trusted: one could write a single line that never ends, or
//! write lines as fast as the pipe takes them. The kernel must still read
//! everything (a child blocked on a full pipe would hang mid-request), but it
//! keeps at most [`MAX_LINE_BYTES`] of any line in memory and passes on at
//! most [`LINES_PER_SECOND`] lines a second, saying how many it dropped.

use std::io;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The longest line kept; the rest of a longer line is read and dropped.
pub const MAX_LINE_BYTES: usize = 4096;
/// Lines passed on per second and child; more are counted and dropped.
pub const LINES_PER_SECOND: u32 = 200;

/// One line read by [`next_line`].
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line's first [`MAX_LINE_BYTES`] (or `max`) bytes, without its newline.
    pub text: Vec<u8>,
    /// How many more bytes the line had.
    pub cut: usize,
}

/// Reads the next line of at most `max` bytes, skipping what lies beyond;
/// `None` at the end of the stream. Memory use is bounded by `max` and the
/// reader's buffer, whatever the writer sends.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Line>> {
    let mut line = Line {
        text: Vec::new(),
        cut: 0,
    };
    loop {
        let buffered = reader.fill_buf().await?;
        if buffered.is_empty() {
            let empty = line.text.is_empty() && line.cut == 0;
            return Ok((!empty).then_some(line));
        }
        let newline = buffered.iter().position(|&b| b == b'\n');
        let part = &buffered[..newline.unwrap_or(buffered.len())];
        let room = max - line.text.len();
        let kept = part.len().min(room);
        line.text.extend_from_slice(&part[..kept]);
        line.cut += part.len() - kept;
        let used = part.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(line));
        }
    }
}

/// At most `limit` lines in any one-second window.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window_start: Option<Instant>,
    in_window: u32,
    dropped: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it on; first say that `dropped` lines before it were not.
    Pass { dropped: u64 },
    /// Drop it (counted).
    Drop,
}

impl Throttle {
    pub fn new(limit: u32) -> Throttle {
        Throttle {
            limit,
            window_start: None,
            in_window: 0,
            dropped: 0,
        }
    }

    /// Judges one line that arrived at `now`.
    pub fn admit(&mut self, now: Instant) -> Verdict {
        let new_window = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if new_window {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.limit {
            self.dropped += 1;
            return Verdict::Drop;
        }
        self.in_window += 1;
        Verdict::Pass {
            dropped: std::mem::take(&mut self.dropped),
        }
    }

    /// Lines dropped and not yet reported.
    pub fn unreported(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        // A small buffer makes lines span many fills, as a pipe's do.
        let mut reader = tokio::io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        while let Some(line) = next_line(&mut reader, max).await.unwrap() {
            out.push(line);
        }
        out
    }

    fn line(text: &str, cut: usize) -> Line {
        Line {
            text: text.as_bytes().to_vec(),
            cut,
        }
    }

    #[tokio::test]
    async fn lines_are_split_at_newlines_and_a_last_line_needs_none() {
        assert_eq!(
            lines(b"one\n\ntwo three\nfour", 64).await,
            vec![
                line("one", 0),
                line("", 0),
                line("two three", 0),
                line("four", 0)
            ]
        );
        assert_eq!(lines(b"", 64).await, vec![]);
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_and_the_next_one_still_read() {
        let mut input = vec![b'x'; 1 << 20];
        input.extend_from_slice(b"\nok\n");
        let got = lines(&input, 16).await;
        assert_eq!(
            got,
            vec![line("xxxxxxxxxxxxxxxx", (1 << 20) - 16), line("ok", 0)]
        );
    }

    #[test]
    fn the_throttle_passes_a_second_s_share_then_reports_what_it_dropped() {
        let start = Instant::now();
        let mut throttle = Throttle::new(3);
        let verdicts: Vec<Verdict> = (0..5).map(|_| throttle.admit(start)).collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Pass { dropped: 0 },
                Verdict::Pass { dropped: 0 },
                Verdict::Pass { dropped: 0 },
                Verdict::Drop,
                Verdict::Drop,
            ]
        );
        assert_eq!(throttle.unreported(), 2);
        let later = start + Duration::from_millis(1000);
        assert_eq!(throttle.admit(later), Verdict::Pass { dropped: 2 });
        assert_eq!(throttle.unreported(), 0);
    }
}
