//! Test guest: its task text is a command that exercises one behaviour of
//! the host (output, failures, traps, limits, dispatch, scoping). Used under
//! many agent names by the integration tests.
//!
//! Commands, several joined with ` && ` run in turn (the last one's result
//! is returned; `$prev` stands for the previous command's result):
//! `echo TEXT` · `print N TEXT` · `stdio TEXT` · `flood BYTES` ·
//! `fail MESSAGE` · `panic MESSAGE` · `trap` · `alloc MIB` · `recurse` ·
//! `spin` · `sleep MS` · `dispatch AGENT TASK` · `spawn AGENT TASK` ·
//! `spawn-then-spin AGENT TASK` · `spawn-then-wait AGENT TASK` · `chain` ·
//! `view ID` · `stop ID` · `wait ID` · `list` · `env` · `read PATH` ·
//! `write PATH TEXT` · `connect HOST:PORT` · `listen HOST:PORT` · `udp HOST:PORT` ·
//! `resolve NAME` · `stdin` · `bomb AGENT TASK` · `write-flood MIB` ·
//! `task-flood AGENT MIB` · `symlink TARGET LINK` · `open-files PATH N` ·
//! `big-result MIB` · `big-error MIB` · `count` (how many tasks this
//! instance has run, its own included: 1 unless an instance were reused)

wit_bindgen::generate!({ path: "../../wit", world: "sub-agent" });

use bgagents::agents::background_agents as toolset;
use bgagents::agents::output;
use bgagents::agents::types::TaskStatus;
use exports::bgagents::agents::agent::{Guest, Request};
use std::hint::black_box;

struct Probe;

/// Tasks this instance has run; only `count` reads it.
static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Guest for Probe {
    fn run(request: Request) -> Result<String, String> {
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut result = String::new();
        for command in request.task.split(" && ") {
            let command = command.trim().replace("$prev", &result);
            result = execute(&command, &request)?;
        }
        Ok(result)
    }
}

fn execute(line: &str, request: &Request) -> Result<String, String> {
    let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
    {
        match command {
            "echo" => Ok(rest.to_string()),
            "count" => Ok(RUNS.load(std::sync::atomic::Ordering::Relaxed).to_string()),
            "print" => {
                let (count, text) = rest.split_once(' ').unwrap_or((rest, ""));
                for _ in 0..count.parse::<usize>().map_err(|e| e.to_string())? {
                    output::write(&format!("{text}\n"));
                }
                Ok("printed".into())
            }
            "stdio" => {
                println!("stdout: {rest}");
                eprintln!("stderr: {rest}");
                Ok("written".into())
            }
            "flood" => {
                let bytes: usize = rest.parse().map_err(|_| "flood takes a byte count")?;
                let line = "x".repeat(1023) + "\n";
                for _ in 0..bytes / 1024 {
                    print!("{line}");
                }
                Ok(format!("flooded {bytes} bytes"))
            }
            "fail" => Err(rest.to_string()),
            "panic" => panic!("{rest}"),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "alloc" => {
                let mib: usize = rest.parse().map_err(|_| "alloc takes MiB")?;
                let mut blocks = Vec::new();
                for _ in 0..mib {
                    blocks.push(black_box(vec![1u8; 1 << 20]));
                }
                Ok(format!("allocated {} MiB", blocks.len()))
            }
            "recurse" => Ok(format!("depth {}", recurse(black_box(1)))),
            "spin" => loop {
                black_box(());
            },
            "sleep" => {
                let ms: u64 = rest.parse().map_err(|_| "sleep takes milliseconds")?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(format!("slept {ms} ms"))
            }
            "dispatch" => {
                let (agent, task) = rest.split_once(' ').unwrap_or((rest, ""));
                let id = toolset::run_background_agent(agent, task, None)?.id;
                wait_for(&id)
            }
            "spawn" => {
                let (agent, task) = rest.split_once(' ').unwrap_or((rest, ""));
                Ok(toolset::run_background_agent(agent, task, None)?.id)
            }
            "spawn-then-spin" => {
                let (agent, task) = rest.split_once(' ').unwrap_or((rest, ""));
                let id = toolset::run_background_agent(agent, task, None)?.id;
                output::write(&format!("{id}\n"));
                loop {
                    black_box(());
                }
            }
            "spawn-then-wait" => {
                let (agent, task) = rest.split_once(' ').unwrap_or((rest, ""));
                let id = toolset::run_background_agent(agent, task, None)?.id;
                output::write(&format!("{id}\n"));
                loop {
                    toolset::wait_background_agents(std::slice::from_ref(&id), 3600)?;
                }
            }
            "chain" => match request.sub_agents.first() {
                None => Ok(request.agent.clone()),
                Some(next) => {
                    let id = toolset::run_background_agent(next, "chain", None)?.id;
                    Ok(format!("{} > {}", request.agent, wait_for(&id)?))
                }
            },
            "view" => {
                toolset::view_background_agent(rest).map(|view| format!("{:?}", view.info.status))
            }
            "stop" => toolset::stop_background_agent(rest).map(|info| format!("{:?}", info.status)),
            "wait" => toolset::wait_background_agents(&[rest.to_string()], 0)
                .map(|report| format!("{:?}", report.tasks[0].status)),
            "list" => Ok(toolset::list_background_agents()
                .iter()
                .map(|info| format!("{} {}", info.agent, info.id))
                .collect::<Vec<_>>()
                .join("\n")),
            "env" => Ok(format!("{:?}", std::env::vars().collect::<Vec<_>>())),
            "read" => std::fs::read_to_string(rest).map_err(|e| format!("read {rest}: {e}")),
            "write" => {
                let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
                std::fs::write(path, text)
                    .map(|()| format!("wrote {path}"))
                    .map_err(|e| format!("write {path}: {e}"))
            }
            "connect" => std::net::TcpStream::connect(rest)
                .map(|_| format!("connected to {rest}"))
                .map_err(|e| format!("connect {rest}: {e}")),
            "listen" => std::net::TcpListener::bind(rest)
                .map(|_| format!("listening on {rest}"))
                .map_err(|e| format!("listen {rest}: {e}")),
            "udp" => std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|socket| socket.send_to(b"hello", rest))
                .map(|sent| format!("sent {sent} bytes to {rest}"))
                .map_err(|e| format!("udp {rest}: {e}")),
            "stdin" => {
                let mut input = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
                    .map(|_| format!("stdin: {input:?}"))
                    .map_err(|e| format!("stdin: {e}"))
            }
            "resolve" => {
                use std::net::ToSocketAddrs;
                (rest, 80)
                    .to_socket_addrs()
                    .map(|addrs| format!("resolved {rest}: {}", addrs.count()))
                    .map_err(|e| format!("resolve {rest}: {e}"))
            }
            "bomb" => {
                // Starts sub-agents as fast as it can until the host says no.
                let (agent, task) = rest.split_once(' ').unwrap_or((rest, ""));
                let mut started = 0;
                loop {
                    match toolset::run_background_agent(agent, task, None) {
                        Ok(_) => started += 1,
                        Err(error) => return Ok(format!("started {started}; then: {error}")),
                    }
                }
            }
            "write-flood" => {
                // One huge string handed to the host over and over: costs the
                // guest almost no fuel, the host a copy of it per call.
                let mib: usize = rest.parse().map_err(|_| "write-flood takes MiB")?;
                let text = "x".repeat(mib << 20);
                loop {
                    output::write(black_box(&text));
                }
            }
            "task-flood" => {
                // Starts with a task text over the host's task cap, again and again.
                let (agent, mib) = rest.split_once(' ').unwrap_or((rest, ""));
                let mib: usize = mib.parse().map_err(|_| "task-flood takes AGENT MIB")?;
                let text = "x".repeat(mib << 20);
                loop {
                    let _ = black_box(toolset::run_background_agent(agent, &text, None));
                }
            }
            "symlink" => {
                let (target, link) = rest.split_once(' ').unwrap_or((rest, ""));
                symlink(target, link)
                    .map(|()| format!("linked {link} -> {target}"))
                    .map_err(|e| format!("symlink {link}: {e}"))
            }
            "open-files" => {
                // Opens PATH N times and keeps every handle open.
                let (path, count) = rest.split_once(' ').unwrap_or((rest, ""));
                let count: usize = count.parse().map_err(|_| "open-files takes PATH N")?;
                let mut files = Vec::new();
                for _ in 0..count {
                    match std::fs::File::open(path) {
                        Ok(file) => files.push(file),
                        Err(e) => return Err(format!("opened {}; then: {e}", files.len())),
                    }
                }
                Ok(format!("opened {}", files.len()))
            }
            "big-result" => {
                let mib: usize = rest.parse().map_err(|_| "big-result takes MiB")?;
                Ok("r".repeat(mib << 20))
            }
            "big-error" => {
                let mib: usize = rest.parse().map_err(|_| "big-error takes MiB")?;
                Err("e".repeat(mib << 20))
            }
            other => Err(format!("unknown probe command `{other}`")),
        }
    }
}

/// Waits for one task and returns its result, or its failure as an error.
fn wait_for(id: &str) -> Result<String, String> {
    while !toolset::wait_background_agents(&[id.to_string()], 0)?.all_done {}
    let view = toolset::view_background_agent(id)?;
    match view.info.status {
        TaskStatus::Completed => Ok(view.result.unwrap_or_default()),
        status => Err(format!("{status:?}: {}", view.error.unwrap_or_default())),
    }
}

/// `symlink(2)` of the guest's C library (std has no stable one on WASI).
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    use std::ffi::{CString, c_char, c_int};
    unsafe extern "C" {
        fn symlink(target: *const c_char, link: *const c_char) -> c_int;
    }
    let target = CString::new(target)?;
    let link = CString::new(link)?;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    match unsafe { symlink(target.as_ptr(), link.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn recurse(depth: u64) -> u64 {
    if black_box(depth) == 0 {
        return 0;
    }
    let mut frame = [depth; 64];
    frame[black_box(3)] = recurse(black_box(depth + 1));
    black_box(frame)[3]
}

export!(Probe);
