//! A task's live output: one capped buffer fed by the guest's WASI stdout and
//! stderr and by the `output.write` import, read by `view` while it runs.
//! A sandbox writes through a [`SandboxOutput`], which a warm instance (made
//! before its task is known) gets bound to its task's buffer at start.

use bytes::Bytes;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Called with every accepted chunk (for streaming to a terminal or client).
pub type OutputListener = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Live output of one task, capped at a fixed number of bytes.
pub struct OutputBuffer {
    capacity: usize,
    state: Mutex<OutputState>,
    listener: Option<OutputListener>,
}

#[derive(Default)]
struct OutputState {
    bytes: Vec<u8>,
    truncated: bool,
    /// [`OutputBuffer::release`] was called: nothing more is kept.
    released: bool,
}

/// What `view` shows of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSnapshot {
    pub text: String,
    /// Bytes past the cap were dropped.
    pub truncated: bool,
    /// The cap, in bytes.
    pub cap: u64,
}

impl OutputBuffer {
    pub fn new(capacity: u64, listener: Option<OutputListener>) -> Arc<OutputBuffer> {
        Arc::new(OutputBuffer {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            state: Mutex::default(),
            listener,
        })
    }

    /// Appends what fits under the cap and drops the rest. Never fails: a
    /// guest whose output is truncated keeps running.
    pub fn append(&self, chunk: &[u8]) {
        let accepted = {
            let mut state = self.state.lock().unwrap();
            let room = match state.released {
                true => 0,
                false => self.capacity.saturating_sub(state.bytes.len()),
            };
            let take = chunk.len().min(room);
            state.bytes.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                state.truncated = true;
            }
            take
        };
        if accepted > 0
            && let Some(listener) = &self.listener
        {
            listener(&chunk[..accepted]);
        }
    }

    /// Appends `line` on a line of its own: after a line break if the
    /// output so far does not end with one.
    pub fn append_line(&self, line: &str) {
        let fresh_line = {
            let state = self.state.lock().unwrap();
            state.bytes.last().is_none_or(|last| *last == b'\n')
        };
        let mut text = String::with_capacity(line.len() + 2);
        if !fresh_line {
            text.push('\n');
        }
        text.push_str(line);
        text.push('\n');
        self.append(text.as_bytes());
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().bytes.len()
    }

    /// Drops everything held (a finished task's output, when the retained
    /// set is over its byte budget) and marks the output truncated; returns
    /// the bytes freed. Later appends are dropped too.
    pub fn release(&self) -> usize {
        let mut state = self.state.lock().unwrap();
        let freed = state.bytes.len();
        state.bytes = Vec::new();
        state.truncated |= freed > 0;
        state.released = true;
        freed
    }

    /// The bytes written from `offset` on (none past the end).
    pub fn bytes_from(&self, offset: usize) -> Vec<u8> {
        let state = self.state.lock().unwrap();
        state.bytes.get(offset..).unwrap_or_default().to_vec()
    }

    pub fn snapshot(&self) -> OutputSnapshot {
        self.snapshot_head(usize::MAX)
    }

    /// Like [`OutputBuffer::snapshot`], but copies at most the first `limit`
    /// bytes (cut on a character boundary); `truncated` then also says
    /// whether anything was left out.
    pub fn snapshot_head(&self, limit: usize) -> OutputSnapshot {
        let state = self.state.lock().unwrap();
        let mut end = state.bytes.len().min(limit);
        while end < state.bytes.len() && end > 0 && state.bytes[end] & 0b1100_0000 == 0b1000_0000 {
            end -= 1;
        }
        OutputSnapshot {
            text: String::from_utf8_lossy(&state.bytes[..end]).into_owned(),
            truncated: state.truncated || end < state.bytes.len(),
            cap: self.capacity as u64,
        }
    }
}

/// Where a sandbox's output goes: its task's [`OutputBuffer`], or, for an
/// instance made ahead of its task, a holding area until [`bind`] names the
/// task. Only a guest's start-up code can write before that (ours are bound
/// before any of their functions is called); what it wrote is handed to the
/// task's buffer, in order, at bind.
///
/// [`bind`]: SandboxOutput::bind
#[derive(Default)]
pub struct SandboxOutput {
    target: OnceLock<Arc<OutputBuffer>>,
    /// Bytes written before binding, at most `early_cap`.
    early: Mutex<Vec<u8>>,
    early_cap: usize,
}

impl SandboxOutput {
    /// Output going straight to `buffer`.
    pub fn bound(buffer: &Arc<OutputBuffer>) -> Arc<SandboxOutput> {
        let output = SandboxOutput::default();
        let _ = output.target.set(buffer.clone());
        Arc::new(output)
    }

    /// Output whose task is not known yet; up to `cap` bytes are held (one
    /// more than a task's output cap keeps the truncation visible).
    pub fn unbound(cap: u64) -> Arc<SandboxOutput> {
        Arc::new(SandboxOutput {
            early_cap: usize::try_from(cap).unwrap_or(usize::MAX).saturating_add(1),
            ..SandboxOutput::default()
        })
    }

    /// Sends everything from now on, and what was held, to `buffer`. A
    /// second call changes nothing.
    pub fn bind(&self, buffer: &Arc<OutputBuffer>) {
        let mut early = self.early.lock().unwrap();
        if self.target.set(buffer.clone()).is_ok() && !early.is_empty() {
            buffer.append(&std::mem::take(&mut *early));
        }
    }

    pub fn append(&self, chunk: &[u8]) {
        if let Some(target) = self.target.get() {
            return target.append(chunk);
        }
        let mut early = self.early.lock().unwrap();
        // Bound since the check above: the held bytes were handed over
        // under this lock, so appending after them keeps the order.
        if let Some(target) = self.target.get() {
            drop(early);
            return target.append(chunk);
        }
        let room = self.early_cap.saturating_sub(early.len());
        early.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// Like [`OutputBuffer::append_line`].
    pub fn append_line(&self, line: &str) {
        match self.target.get() {
            Some(target) => target.append_line(line),
            None => {
                let fresh_line =
                    (self.early.lock().unwrap().last()).is_none_or(|last| *last == b'\n');
                let lead = if fresh_line { "" } else { "\n" };
                self.append(format!("{lead}{line}\n").as_bytes());
            }
        }
    }
}

/// The guest's stdout or stderr, writing into its [`SandboxOutput`].
#[derive(Clone)]
pub struct OutputSink(pub Arc<SandboxOutput>);

/// How much the guest may hand over per write; writes are accepted at once.
const WRITE_BUDGET: usize = 64 * 1024;

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.0.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

impl tokio::io::AsyncWrite for OutputSink {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.append(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_marks_truncation() {
        let buffer = OutputBuffer::new(5, None);
        buffer.append(b"abc");
        assert!(!buffer.snapshot().truncated);
        buffer.append(b"defg");
        let snapshot = buffer.snapshot();
        assert_eq!(snapshot.text, "abcde");
        assert!(snapshot.truncated);
    }

    #[test]
    fn early_output_is_handed_over_in_order_at_bind() {
        let early = SandboxOutput::unbound(6);
        early.append(b"abc");
        early.append_line("de");
        early.append(b"overflow");
        let buffer = OutputBuffer::new(6, None);
        early.bind(&buffer);
        early.append(b"late");
        let snapshot = buffer.snapshot();
        assert_eq!(snapshot.text, "abc\nde");
        assert!(snapshot.truncated, "what did not fit is marked cut");
    }

    #[test]
    fn a_head_snapshot_stops_on_a_character_boundary() {
        let buffer = OutputBuffer::new(64, None);
        buffer.append("aé€".as_bytes());
        let head = buffer.snapshot_head(4);
        assert_eq!(head.text, "aé");
        assert!(head.truncated);
        assert!(!buffer.snapshot_head(64).truncated);
    }
}
