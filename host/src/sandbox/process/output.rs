//! A sandboxed command's output: stdout and stderr through one pipe (so
//! they interleave as the command wrote them), read by a thread of its own
//! into a buffer that keeps the first `cap` bytes and counts the rest — or,
//! for a program's stderr, keeps the last `cap` bytes (its tail, which
//! holds the reason it failed).

use std::io::{PipeReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The output read so far; clones share it.
#[derive(Clone)]
pub(crate) struct Output {
    captured: Arc<Mutex<Captured>>,
    /// `true` once the pipe reached end of file: every process holding it
    /// has exited.
    finished: watch::Receiver<bool>,
}

struct Captured {
    bytes: Vec<u8>,
    /// Bytes written in all, kept or not.
    total: u64,
    cap: usize,
    /// Whether the last `cap` bytes are kept rather than the first.
    tail: bool,
}

impl Output {
    /// Reads `pipe` until every writer has closed it, keeping `cap` bytes.
    /// Bytes past the cap are read and dropped, so a chatty command never
    /// blocks on a full pipe.
    pub(crate) fn capture(pipe: PipeReader, cap: usize) -> std::io::Result<Output> {
        Output::read(pipe, cap, false)
    }

    /// Reads `pipe` until every writer has closed it, keeping its last
    /// `cap` bytes.
    pub(crate) fn capture_tail(pipe: PipeReader, cap: usize) -> std::io::Result<Output> {
        Output::read(pipe, cap, true)
    }

    fn read(mut pipe: PipeReader, cap: usize, tail: bool) -> std::io::Result<Output> {
        let captured = Arc::new(Mutex::new(Captured {
            bytes: Vec::new(),
            total: 0,
            cap,
            tail,
        }));
        let (done, finished) = watch::channel(false);
        let sink = captured.clone();
        std::thread::Builder::new()
            .name("sandbox-output".into())
            .spawn(move || {
                let mut chunk = vec![0; 64 << 10];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(read) => sink.lock().unwrap().append(&chunk[..read]),
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            tracing::warn!(%error, "reading a sandboxed process's output");
                            break;
                        }
                    }
                }
                let _ = done.send(true);
            })?;
        Ok(Output { captured, finished })
    }

    /// Waits until the pipe is closed, at most `grace`: the command's
    /// processes are gone by then, so this only collects what is still in
    /// flight.
    pub(crate) async fn finish(&self, grace: Duration) {
        let mut finished = self.finished.clone();
        let _ = tokio::time::timeout(grace, finished.wait_for(|done| *done)).await;
    }

    /// The output as text (invalid UTF-8 shown as U+FFFD), with a note when
    /// it was cut.
    pub(crate) fn text(&self) -> String {
        let captured = self.captured.lock().unwrap();
        let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
        if captured.tail {
            return text;
        }
        if captured.total > captured.bytes.len() as u64 {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!(
                "[output cut at {} bytes; the command wrote {} bytes]",
                captured.cap, captured.total
            ));
        }
        text
    }
}

impl Captured {
    fn append(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.tail {
            self.bytes.extend_from_slice(bytes);
            let extra = self.bytes.len().saturating_sub(self.cap);
            self.bytes.drain(..extra);
            return;
        }
        let room = self.cap.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn the_head_or_the_tail_is_kept() {
        for (tail, kept) in [
            (
                false,
                "0123[output cut at 4 bytes; the command wrote 10 bytes]",
            ),
            (true, "6789"),
        ] {
            let (reader, mut writer) = std::io::pipe().unwrap();
            let output = Output::read(reader, 4, tail).unwrap();
            writer.write_all(b"01234").unwrap();
            writer.write_all(b"56789").unwrap();
            drop(writer);
            output.finish(Duration::from_secs(10)).await;
            assert_eq!(output.text().replace('\n', ""), kept);
        }
    }
}
