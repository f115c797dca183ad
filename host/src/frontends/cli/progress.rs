//! What the command line shows while components load: compiling a large
//! component (a Python or JavaScript guest) can take half a minute, which
//! must not look like a hang. On a cache miss it says what it compiles and
//! why; on a terminal a heartbeat counts the seconds in place.

use super::HOST;
use super::sanitise::{Keep, printable};
use crate::config::units::format_size;
use crate::toolset::LoadProgress;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the heartbeat updates the elapsed time.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Turns [`LoadProgress`] into lines on stderr.
pub struct CompileNotices {
    enabled: bool,
    terminal: bool,
    /// The running heartbeat: dropping the sender stops it.
    heartbeat: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl CompileNotices {
    /// With `enabled` false, nothing is shown.
    pub fn new(enabled: bool) -> CompileNotices {
        CompileNotices {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            heartbeat: Mutex::new(None),
        }
    }

    pub fn show(&self, event: LoadProgress) {
        if !self.enabled {
            return;
        }
        match event {
            LoadProgress::Compiling {
                path,
                bytes,
                cached_after,
            } => {
                let name = path.file_name().unwrap_or(path.as_os_str());
                let name = printable(&name.to_string_lossy(), Keep::OneLine).into_owned();
                let why = match cached_after {
                    true => "first run only",
                    false => "the cache is off",
                };
                let line = format!("{HOST} compiling {name} ({}, {why})…", format_size(bytes));
                if self.terminal {
                    self.stop_heartbeat();
                    *self.heartbeat.lock().unwrap() = Some(heartbeat(line));
                } else {
                    eprintln!("{line}");
                }
            }
            LoadProgress::Compiled { .. } => self.stop_heartbeat(),
        }
    }

    fn stop_heartbeat(&self) {
        if let Some((stop, thread)) = self.heartbeat.lock().unwrap().take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for CompileNotices {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// Shows `line`, then rewrites it in place every [`HEARTBEAT`] with the time
/// elapsed, until the sender is dropped; then ends it with the total time.
fn heartbeat(line: String) -> (mpsc::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let started = Instant::now();
        let write = |text: &str| {
            let mut stderr = std::io::stderr().lock();
            let _ = stderr.write_all(text.as_bytes());
            let _ = stderr.flush();
        };
        write(&line);
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
            write(&format!("\r{line} {} s", started.elapsed().as_secs()));
        }
        write(&format!(
            "\r{line} done in {:.1} s\n",
            started.elapsed().as_secs_f64()
        ));
    });
    (stop, thread)
}
