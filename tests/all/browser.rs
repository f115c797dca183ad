//! A real headless Chromium driven over the DevTools protocol, for the
//! dashboard's tests: Chromium's `--remote-debugging-pipe` takes commands on
//! its file descriptor 3 and answers on 4, each message JSON ended by a NUL
//! byte. One page, JavaScript evaluated in it, screenshots.

use bgagents_testkit::HANG;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Where Debian's `chromium` package puts it.
const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) struct Browser {
    child: Child,
    commands: File,
    answers: Receiver<Value>,
    next_id: u64,
    /// The page's DevTools session.
    session: String,
    _profile: tempdir::Profile,
}

mod tempdir {
    /// A fresh profile directory, removed with the browser.
    pub(crate) struct Profile(pub(crate) std::path::PathBuf);
    impl Drop for Profile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

impl Browser {
    /// Starts headless Chromium with one blank page of `width`×`height`.
    pub(crate) fn start(scratch: &Path, width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "the dashboard tests need Chromium: apt-get install chromium"
        );
        let profile = scratch.join(format!("chromium-{}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let (their_commands, our_commands) = pipe();
        let (our_answers, their_answers) = pipe();
        let mut command = Command::new(CHROMIUM);
        command
            .args([
                "--headless",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                // Root in a container has no user namespace sandbox.
                "--no-sandbox",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (dup/dup2) between fork and
        // exec; the pipe ends become descriptors 3 and 4 of Chromium.
        unsafe {
            command.pre_exec(move || {
                let commands = libc::fcntl(their_commands, libc::F_DUPFD, 10);
                let answers = libc::fcntl(their_answers, libc::F_DUPFD, 10);
                if commands < 0
                    || answers < 0
                    || libc::dup2(commands, 3) < 0
                    || libc::dup2(answers, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        // SAFETY: each descriptor was made above and is owned once here.
        let (commands, answers) = unsafe {
            libc::close(their_commands);
            libc::close(their_answers);
            (
                File::from_raw_fd(our_commands),
                File::from_raw_fd(our_answers),
            )
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers);
            loop {
                let mut message = Vec::new();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        message.pop();
                        if let Ok(value) = serde_json::from_slice::<Value>(&message)
                            && sender.send(value).is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands,
            answers: receiver,
            next_id: 0,
            session: String::new(),
            _profile: tempdir::Profile(profile),
        };
        let targets = browser.command(None, "Target.getTargets", json!({}));
        let page = (targets["targetInfos"].as_array().unwrap().iter())
            .find(|target| target["type"] == "page")
            .map(|target| target["targetId"].as_str().unwrap().to_string())
            .unwrap_or_else(|| {
                let made =
                    browser.command(None, "Target.createTarget", json!({"url": "about:blank"}));
                made["targetId"].as_str().unwrap().to_string()
            });
        let attached = browser.command(
            None,
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.enable", json!({}));
        browser.page("Runtime.enable", json!({}));
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends `method` (to the page's session when `session`) and returns its
    /// result; a protocol error fails the test.
    fn command(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(answer) if answer["id"] == id => {
                    if let Some(error) = answer.get("error") {
                        panic!("{method}: {error}");
                    }
                    return answer["result"].clone();
                }
                // Events and other answers.
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("{method}: Chromium did not answer"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: Chromium exited"),
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params)
    }

    /// Loads `url` and waits until its document has loaded.
    pub(crate) fn open(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        self.wait_for("page loaded", "document.readyState === 'complete'");
    }

    /// The value of JavaScript `expression` in the page (awaited when a
    /// promise); an exception fails the test.
    pub(crate) fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression}: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; fails the test, saying
    /// `what`, if it never is.
    pub(crate) fn wait_for(&mut self, what: &str, expression: &str) {
        let started = Instant::now();
        loop {
            if self.eval(&format!("Boolean({expression})")) == json!(true) {
                return;
            }
            if started.elapsed() > HANG {
                let body = self.eval("document.body ? document.body.innerText : ''");
                panic!(
                    "never {what} ({expression}); the page reads:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the page to `path`.
    pub(crate) fn screenshot(&mut self, path: &Path) -> PathBuf {
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let data = shot["data"].as_str().unwrap();
        let bytes = base64_decode(data);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &bytes).unwrap();
        path.to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {byte}"),
        }
    };
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = chunk.iter().copied().filter(|&byte| byte != b'=').collect();
        let mut bits = 0u32;
        for &digit in &digits {
            bits = bits << 6 | value(digit);
        }
        bits <<= 6 * (4 - digits.len() as u32);
        let octets = bits.to_be_bytes();
        bytes.extend_from_slice(&octets[1..digits.len()]);
    }
    bytes
}
