//! Shutdown: one [`CancellationToken`] per process, cancelled by SIGINT or
//! SIGTERM, passed by clone into every task.

use futures::FutureExt;
pub use tokio_util::sync::CancellationToken;

/// Cancels `token` when the process receives SIGINT (Ctrl-C) or SIGTERM
/// (`docker stop`, systemd, Kubernetes). Spawns a task; returns at once.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(signal = name, "shutdown requested");
        token.cancel();
    });
    Ok(())
}

/// Runs `fut` as a supervised task: if it ends (successfully or not) before
/// `token` is cancelled, that is an error that stops the process; the token
/// is cancelled so siblings wind down.
pub fn supervise<F>(
    name: impl Into<std::borrow::Cow<'static, str>>,
    token: CancellationToken,
    fut: F,
) -> tokio::task::JoinHandle<anyhow::Result<()>>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let name = name.into();
    tokio::spawn(async move {
        // A panic is a failure like any other: it must stop the process,
        // not leave a half-working one behind.
        let result = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                token.cancel();
                return Err(anyhow::anyhow!("task `{name}` panicked: {what}"));
            }
        };
        if token.is_cancelled() {
            return result;
        }
        token.cancel();
        match result {
            Ok(()) => Err(anyhow::anyhow!(
                "task `{name}` ended without being asked to"
            )),
            Err(e) => Err(e.context(format!("task `{name}` failed"))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_cancels_the_token() {
        let token = CancellationToken::new();
        cancel_on_signal(token.clone()).unwrap();
        nix_kill_self();
        tokio::time::timeout(std::time::Duration::from_secs(5), token.cancelled())
            .await
            .expect("token cancelled by SIGTERM");
    }

    fn nix_kill_self() {
        // SAFETY-free: kill(2) through the std process API is not available,
        // so use the `kill` command on our own pid.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[tokio::test]
    async fn a_task_that_ends_unasked_is_an_error_and_cancels_siblings() {
        let token = CancellationToken::new();
        let handle = supervise("quitter", token.clone(), async { Ok(()) });
        let err = handle.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("quitter"));
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_that_panics_is_an_error_and_cancels_siblings() {
        let token = CancellationToken::new();
        let handle = supervise("boom", token.clone(), async { panic!("kaboom") });
        let err = handle.await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("boom") && err.to_string().contains("kaboom"),
            "{err}"
        );
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_that_ends_after_cancel_is_fine() {
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = supervise("worker", token.clone(), async move {
            t.cancelled().await;
            Ok(())
        });
        token.cancel();
        handle.await.unwrap().unwrap();
    }
}
