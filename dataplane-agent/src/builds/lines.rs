//! A step's output cut into lines, each bounded, and the task that reads one pipe.
//!
//! A step that writes megabytes without a newline must not grow the agent's memory: a line
//! keeps its first `max` bytes and counts the rest, which it drops, and says so in a marker at
//! its end. Bytes that are not UTF-8 are replaced, never fatal.

use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::event::LogStream;

/// How much is read from a pipe at once.
const READ_BYTES: usize = 8 * 1024;

/// What a cut line ends with: how many bytes were dropped.
pub(crate) fn cut_marker(dropped: usize) -> String {
    format!(" [line cut: {dropped} more bytes]")
}

/// Splits bytes into lines of at most `max` bytes (plus the marker).
pub(crate) struct Lines {
    max: usize,
    line: Vec<u8>,
    dropped: usize,
}

impl Lines {
    /// Lines of at most `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            dropped: 0,
        }
    }

    /// Takes more bytes; every line they complete goes to `out`.
    pub(crate) fn push(&mut self, mut bytes: &[u8], out: &mut Vec<String>) {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.keep(&bytes[..newline]);
            out.push(self.end());
            bytes = &bytes[newline + 1..];
        }
        self.keep(bytes);
    }

    /// The last line, if the output did not end with a newline.
    pub(crate) fn finish(&mut self) -> Option<String> {
        (!self.line.is_empty() || self.dropped > 0).then(|| self.end())
    }

    /// Bytes held for the line in progress.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.line.len()
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = self.max - self.line.len();
        let kept = room.min(bytes.len());
        self.line.extend_from_slice(&bytes[..kept]);
        self.dropped += bytes.len() - kept;
    }

    fn end(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.line).into_owned();
        if self.dropped > 0 {
            line.push_str(&cut_marker(self.dropped));
        }
        self.line.clear();
        self.dropped = 0;
        line
    }
}

/// One line read from a step, on its way to the run's sequence.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) stream: LogStream,
    pub(crate) text: String,
    pub(crate) at: SystemTime,
}

/// Reads `pipe` to its end and sends its lines, in order, to `lines`. Once `stop_at` holds an
/// instant (the step's process has ended and its group was killed), reading stops then even
/// if the pipe is still open: a process that left the group may hold it open forever. That,
/// and a read error, end the output with a line saying so.
pub(crate) async fn forward(
    mut pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    max: usize,
    lines: mpsc::Sender<Line>,
    mut stop_at: watch::Receiver<Option<Instant>>,
) {
    let mut splitter = Lines::new(max);
    let mut buffer = vec![0; READ_BYTES];
    let mut out = Vec::new();
    let note = loop {
        let read = tokio::select! {
            read = pipe.read(&mut buffer) => read,
            () = deadline(&mut stop_at) => break Some(format!(
                "[troupe] stopped reading {}: still open after the step ended (a process left its process group)",
                stream.as_str()
            )),
        };
        match read {
            Ok(0) => break None,
            Ok(n) => splitter.push(&buffer[..n], &mut out),
            Err(e) => break Some(format!("[troupe] reading {}: {e}", stream.as_str())),
        }
        for text in out.drain(..) {
            let line = Line {
                stream,
                text,
                at: SystemTime::now(),
            };
            if lines.send(line).await.is_err() {
                return;
            }
        }
    };
    for text in splitter.finish().into_iter().chain(note) {
        let line = Line {
            stream,
            text,
            at: SystemTime::now(),
        };
        if lines.send(line).await.is_err() {
            return;
        }
    }
}

/// Resolves at the instant `at` holds once it holds one; never if its sender goes first.
async fn deadline(at: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let current = *at.borrow_and_update();
        if let Some(at) = current {
            tokio::time::sleep_until(at).await;
            return;
        }
        if at.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_split(max: usize, chunks: &[&[u8]]) -> (Vec<String>, Option<String>) {
        let mut lines = Lines::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk, &mut out);
        }
        let last = lines.finish();
        (out, last)
    }

    #[test]
    fn lines_split_across_chunks() {
        let (out, last) = mk_split(100, &[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(out, ["one", "two", ""]);
        assert_eq!(last.as_deref(), Some("three"));
        let (out, last) = mk_split(100, &[b"end\n"]);
        assert_eq!(out, ["end"]);
        assert_eq!(last, None);
    }

    #[test]
    fn a_long_line_is_cut_with_a_marker_and_memory_stays_bounded() {
        let mut lines = Lines::new(16);
        let mut out = Vec::new();
        for _ in 0..1024 {
            lines.push(&[b'a'; 1024], &mut out);
            assert!(lines.held() <= 16, "held {} bytes", lines.held());
        }
        lines.push(b"\nnext\n", &mut out);
        assert_eq!(
            out,
            [
                format!("{}{}", "a".repeat(16), cut_marker(1024 * 1024 - 16)),
                "next".to_string()
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let (out, _) = mk_split(100, &[b"ok \xff\xfe done\n"]);
        assert_eq!(out, ["ok \u{fffd}\u{fffd} done"]);
    }

    #[tokio::test]
    async fn forward_stops_at_the_deadline_when_the_pipe_stays_open() {
        let (writer, reader) = tokio::io::duplex(64);
        let (tx, mut rx) = mpsc::channel(8);
        let (stop_tx, stop_rx) = watch::channel(None);
        let task = tokio::spawn(forward(reader, LogStream::Stderr, 100, tx, stop_rx));
        let mut writer = writer;
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"partial")
            .await
            .unwrap();
        stop_tx.send_replace(Some(Instant::now()));
        tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("the reader stops at its deadline")
            .unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.text, "partial");
        let note = rx.recv().await.unwrap();
        assert!(note.text.contains("stopped reading stderr"), "{note:?}");
        assert!(rx.recv().await.is_none());
    }
}
