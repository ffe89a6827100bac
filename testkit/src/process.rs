//! A service binary run as a child process by a test or a bench, with its
//! JSON log read for the line that says it is ready and for its warnings
//! and errors.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// A running service. Killed when dropped, so a failed assertion does not
/// leave it behind.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    /// The `addr` field of its ready line.
    pub addr: String,
    /// Its WARN and ERROR lines, complete once it has exited.
    problems: Option<JoinHandle<Vec<String>>>,
}

/// How a [`ServiceProcess`] treats its warnings and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Keeps them for [`ServiceProcess::problems`].
    Keep,
    /// Also prints them to stderr as they come, prefixed by the name.
    Print(&'static str),
}

impl ServiceProcess {
    /// Starts `cmd` with `LOG_FORMAT=json` and waits up to 30 s for a log
    /// line whose message is `ready`; its `addr` field becomes
    /// [`ServiceProcess::addr`].
    ///
    /// # Errors
    /// If it cannot be started or does not log `ready` in time.
    pub fn spawn(mut cmd: Command, ready: &'static str, echo: Echo) -> anyhow::Result<Self> {
        let mut child = cmd
            .env("LOG_FORMAT", "json")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let problems = std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut problems = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["level"] == "WARN" || v["level"] == "ERROR" {
                    if let Echo::Print(name) = echo {
                        eprintln!("{name}: {line}");
                    }
                    problems.push(line);
                } else if v["message"] == ready
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
            problems
        });
        let mut process = Self {
            child,
            addr: String::new(),
            problems: Some(problems),
        };
        process.addr = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("it did not log `{ready}`"))?;
        Ok(process)
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills it with SIGKILL and waits for it to be gone.
    ///
    /// # Errors
    /// As [`Child::kill`] and [`Child::wait`].
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }

    /// Sends SIGTERM and waits up to `secs` for it to exit.
    ///
    /// # Errors
    /// If it is still running after `secs`.
    pub async fn terminate(&mut self, secs: u64) -> anyhow::Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()?;
        let exited = async {
            loop {
                if let Some(status) = self.child.try_wait()? {
                    return anyhow::Ok(status);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(secs), exited)
            .await
            .with_context(|| format!("still running {secs} s after SIGTERM"))?
    }

    /// Its WARN and ERROR lines. Call it after the process has exited: it
    /// blocks the thread until the end of the process's log.
    pub fn problems(&mut self) -> Vec<String> {
        self.problems
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default()
    }

    /// Its ERROR lines; as [`ServiceProcess::problems`].
    pub fn errors(&mut self) -> Vec<String> {
        self.problems()
            .into_iter()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v["level"] == "ERROR")
            })
            .collect()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to its end, at most `secs` (then kills it and panics): for
/// tests of a service that must stop by itself. Returns its exit code and
/// standard error.
///
/// # Panics
/// When it does not stop in time, or cannot be started.
pub fn run_to_exit(mut cmd: std::process::Command, secs: u64) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the service");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the service did not stop by itself within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    (status.code(), stderr)
}
