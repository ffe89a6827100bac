//! Counting a process's system calls during a benchmark with `perf stat`
//! and the kernel's syscall tracepoints (these work where hardware
//! counters do not, e.g. on virtual machines).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The system calls the benchmarks count.
pub const SYSCALLS: &[&str] = &[
    "sendto",
    "write",
    "writev",
    "futex",
    "read",
    "recvfrom",
    "epoll_wait",
];

/// A running `perf stat -p <pid>`.
#[derive(Debug)]
pub struct SyscallCounter {
    child: std::process::Child,
    output: PathBuf,
}

impl SyscallCounter {
    /// Starts counting `pid`'s [`SYSCALLS`]; `None` (with a message) when
    /// `perf` is missing or cannot attach.
    pub fn attach(pid: u32) -> Option<Self> {
        let output = std::env::temp_dir().join(format!(
            "chatbus-perf-{}.csv",
            uuid::Uuid::new_v4().simple()
        ));
        let events: Vec<String> = SYSCALLS
            .iter()
            .map(|s| format!("syscalls:sys_enter_{s}"))
            .collect();
        let child = std::process::Command::new("perf")
            .args(["stat", "-x", ",", "-o"])
            .arg(&output)
            .arg("-e")
            .arg(events.join(","))
            .arg("-p")
            .arg(pid.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(child) => {
                // perf needs a moment to attach.
                std::thread::sleep(std::time::Duration::from_millis(300));
                Some(Self { child, output })
            }
            Err(e) => {
                eprintln!(
                    "perf stat not available ({e}): syscalls not counted (apt-get install linux-perf)"
                );
                None
            }
        }
    }

    /// Stops counting; the counts by syscall name (empty if perf failed).
    pub fn stop(mut self) -> BTreeMap<String, u64> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.output).unwrap_or_default();
        let _ = std::fs::remove_file(&self.output);
        let counts: BTreeMap<String, u64> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(',');
                let count = f.next()?.trim().parse().ok()?;
                let name = f.nth(1)?.trim().strip_prefix("syscalls:sys_enter_")?;
                Some((name.to_owned(), count))
            })
            .collect();
        if counts.is_empty() {
            eprintln!("perf stat counted nothing (tracepoints unavailable?): {text}");
        }
        counts
    }
}
