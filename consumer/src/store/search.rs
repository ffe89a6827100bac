//! The bounds every search (`q`) keeps, the same for every store: at most
//! [`SearchLimits::max_words`] words and [`SearchLimits::max_bytes`] bytes
//! in a `q` (checked by the planner), at most
//! [`SearchLimits::concurrency`] searches at once ([`SearchGate`]: the
//! others wait [`SearchLimits::queue_wait`], then are refused), and each
//! one cancelled by the database after [`SearchLimits::timeout`].
//!
//! Searches run on connections of their own (a pool of `concurrency`
//! connections in each store): ingest's writes and the other reads never
//! wait behind a search, and a database busy with searches spends at most
//! `concurrency` connections' worth of CPU on them.

use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use super::StoreError;

/// The bounds of a search. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchLimits {
    /// Most words in a `q` (after folding: `a-b` is two).
    pub max_words: usize,
    /// Most bytes in a `q` (UTF-8, as sent).
    pub max_bytes: usize,
    /// Most searches running at once (per consumer instance).
    pub concurrency: u32,
    /// How long a search waits for a free slot before it is refused.
    pub queue_wait: Duration,
    /// How long one search may run before the database cancels it.
    pub timeout: Duration,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            max_words: 32,
            max_bytes: 1024,
            concurrency: 2,
            queue_wait: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

impl SearchLimits {
    /// [`timeout`](Self::timeout) in whole ms, at least 1.
    pub(crate) fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Admits at most [`SearchLimits::concurrency`] searches at once.
#[derive(Debug)]
pub(crate) struct SearchGate {
    permits: Semaphore,
    wait: Duration,
}

impl SearchGate {
    /// A gate for `limits`.
    pub(crate) fn new(limits: &SearchLimits) -> Self {
        Self {
            permits: Semaphore::new(limits.concurrency.max(1) as usize),
            wait: limits.queue_wait,
        }
    }

    /// A slot, held until the permit is dropped.
    ///
    /// # Errors
    /// [`StoreError::SearchBusy`] when no slot came free within the wait.
    pub(crate) async fn enter(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        let refused = || {
            metrics::counter!("chatbus_consumer_search_refused_total", "reason" => "busy")
                .increment(1);
            StoreError::SearchBusy
        };
        match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(refused()),
        }
    }
}

/// Counts a search the database cancelled and names it.
pub(crate) fn timed_out(limits: &SearchLimits) -> StoreError {
    metrics::counter!("chatbus_consumer_search_refused_total", "reason" => "timeout").increment(1);
    StoreError::SearchTimeout(limits.timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_gate_refuses_after_the_wait() {
        let gate = SearchGate::new(&SearchLimits {
            concurrency: 2,
            queue_wait: Duration::from_millis(20),
            ..SearchLimits::default()
        });
        let a = gate.enter().await.unwrap();
        let _b = gate.enter().await.unwrap();
        assert!(matches!(gate.enter().await, Err(StoreError::SearchBusy)));
        drop(a);
        assert!(gate.enter().await.is_ok());
    }
}
