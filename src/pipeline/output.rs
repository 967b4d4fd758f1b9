//! A step's output: lines read from its pipes, the stderr tail kept for a
//! failure message, and the per-deployment byte budget.
//!
//! A line is lossy UTF-8 without its trailing `\r\n`, at most [`MAX_LINE`]
//! bytes (the rest of an overlong line is dropped, not wrapped). Reading keeps
//! up with the child while it runs; after the leader has exited a pipe gets
//! [`DRAIN_IDLE`] per read and [`DRAIN_LIMIT`] in all, so a process that
//! escaped the group and holds the pipe open cannot hang the step.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest line kept, in bytes.
pub const MAX_LINE: usize = 16 * 1024;
/// How many stderr lines a failure reports, and at most how many bytes.
const TAIL_LINES: usize = 20;
const TAIL_BYTES: usize = 4 * 1024;
/// After the leader exits: how long one read may wait, and how long reading
/// may go on at all.
const DRAIN_IDLE: Duration = Duration::from_millis(500);
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: String,
}

/// The per-deployment output budget. Once a line does not fit, the budget is
/// spent for good: later lines are refused too, even short ones, so the log
/// never has silent holes. The caller emits one `truncated` event with
/// [`OutputCap::dropped_lines`].
#[derive(Debug, Clone)]
pub struct OutputCap {
    limit: u64,
    used: u64,
    dropped: u64,
}

impl OutputCap {
    pub fn new(limit_bytes: u64) -> OutputCap {
        OutputCap {
            limit: limit_bytes,
            used: 0,
            dropped: 0,
        }
    }

    /// Whether a line of `line_len` bytes may be kept; counts it as dropped
    /// if not.
    pub fn admit(&mut self, line_len: usize) -> bool {
        let len = u64::try_from(line_len).unwrap_or(u64::MAX);
        let fits = self.dropped == 0 && self.used.saturating_add(len) <= self.limit;
        if fits {
            self.used += len;
        } else {
            self.dropped += 1;
        }
        fits
    }

    pub fn dropped_lines(&self) -> u64 {
        self.dropped
    }
}

/// Reads one pipe to its end (or until the drain bounds stop it), sending
/// each line to `output`. Returns the stderr tail for the stderr pipe, its
/// lines masked by `redactor` before the tail is cut to size.
pub(super) async fn pump<R: AsyncRead + Unpin>(
    pipe: R,
    stream: OutputStream,
    output: mpsc::Sender<OutputLine>,
    leader_gone: CancellationToken,
    redactor: Option<std::sync::Arc<crate::redact::Redactor>>,
) -> Option<String> {
    let mut lines = LineReader::new(pipe);
    let mut tail = (stream == OutputStream::Stderr).then(StderrTail::default);
    let mut receiver_gone = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        let next = match drain_until {
            None => tokio::select! {
                next = lines.next_line() => next,
                () = leader_gone.cancelled() => {
                    drain_until = Some(Instant::now() + DRAIN_LIMIT);
                    continue;
                }
            },
            Some(limit) => {
                let deadline = limit.min(Instant::now() + DRAIN_IDLE);
                match tokio::time::timeout_at(deadline, lines.next_line()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            }
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(stream = stream.as_str(), error = %e, "reading step output failed");
                break;
            }
        };
        if let Some(tail) = &mut tail {
            match &redactor {
                Some(redactor) => tail.push(&redactor.redact(&line)),
                None => tail.push(&line),
            }
        }
        if !receiver_gone && output.send(OutputLine { stream, line }).await.is_err() {
            receiver_gone = true;
        }
    }
    tail.map(|tail| tail.render())
}

/// Splits a pipe into lines. `next_line` is cancel-safe: a partial line lives
/// in `pending`, and input is consumed only once it has been copied there.
struct LineReader<R> {
    reader: BufReader<R>,
    pending: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(pipe: R) -> Self {
        LineReader {
            reader: BufReader::new(pipe),
            pending: Vec::new(),
        }
    }

    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            let newline = buf.iter().position(|&b| b == b'\n');
            let content = &buf[..newline.unwrap_or(buf.len())];
            let room = (MAX_LINE + 1).saturating_sub(self.pending.len());
            self.pending
                .extend_from_slice(&content[..content.len().min(room)]);
            let used = newline.map_or(buf.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(self.take_line()));
            }
        }
    }

    /// One byte past the cap is kept so a `\r` right at the cap is still
    /// recognised; the cut happens here, on a character boundary.
    fn take_line(&mut self) -> String {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        let mut line = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        if line.len() > MAX_LINE {
            line.truncate(line.floor_char_boundary(MAX_LINE));
        }
        line
    }
}

/// The last [`TAIL_LINES`] stderr lines.
#[derive(Default)]
pub(super) struct StderrTail {
    lines: VecDeque<String>,
}

impl StderrTail {
    pub(super) fn push(&mut self, line: &str) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// The lines joined by `\n`, keeping the end if over [`TAIL_BYTES`].
    pub(super) fn render(&self) -> String {
        let joined = self
            .lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        if joined.len() <= TAIL_BYTES {
            return joined;
        }
        let start = joined.ceil_char_boundary(joined.len() - TAIL_BYTES);
        joined[start..].to_string()
    }
}
