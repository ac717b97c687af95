//! How handlers call the store: on tokio's blocking pool, or, for the
//! short calls on every job's path, in place on the async thread when
//! that costs nothing else.
//!
//! The pool costs two thread hand-offs per call, about a fifth of the
//! server's time per job. A short call (a claim, a result, a heartbeat)
//! therefore runs in place when the store is in-process (SQLite), no call
//! is on the pool (it cannot wait behind a long one), at most one other
//! began in the last [`WINDOW_US`] (two are often one job's chain: a
//! submit and the claim it wakes; three are load, and then the pool lets
//! the store work while the async thread serves the next requests), and
//! no call made in place took longer than [`SLOW_US`] in the last
//! [`OFF_US`] (a disk that stalls must not stall every request). With
//! several async threads a call on the pool may start just after the look
//! and make one in place wait for it: the same wait it would have had on
//! the pool.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{ApiError, ApiResult};
use super::store::{Store, StoreResult};

/// Three short calls within this time mean the server is busy.
const WINDOW_US: u64 = 500;
/// A call made in place that takes longer than this (a stalling disk, a
/// commit that waited for an fsync) sends the next ones to the pool for
/// [`OFF_US`].
const SLOW_US: u64 = 2_000;
const OFF_US: u64 = 10_000_000;

/// What decides where a store call runs; one per server.
pub struct StoreCalls {
    /// Calls under way on the blocking pool.
    busy: Arc<AtomicUsize>,
    /// When the last two short calls began, in microseconds since `epoch`.
    last: AtomicU64,
    before: AtomicU64,
    /// Until when (same clock) short calls go to the pool.
    off_until: AtomicU64,
    epoch: Instant,
}

impl Default for StoreCalls {
    fn default() -> StoreCalls {
        // An epoch a second back, so that the first calls are not "close
        // to" ones that never happened.
        let now = Instant::now();
        StoreCalls {
            busy: Arc::default(),
            last: AtomicU64::new(0),
            before: AtomicU64::new(0),
            off_until: AtomicU64::new(0),
            epoch: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        }
    }
}

/// Counts a call on the blocking pool until the call returns, even when
/// the request that made it is gone.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn enter(n: &Arc<AtomicUsize>) -> Busy {
        n.fetch_add(1, Ordering::AcqRel);
        Busy(n.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StoreCalls {
    fn micros(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Runs one store operation on the blocking pool.
    pub async fn pool<T, F>(&self, store: &Arc<dyn Store>, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let store = store.clone();
        let busy = Busy::enter(&self.busy);
        let out = tokio::task::spawn_blocking(move || {
            let out = f(store.as_ref());
            drop(busy);
            out
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("store task failed: {e}")))?;
        Ok(out?)
    }

    /// Runs a short store operation in place when that is free (see the
    /// module's documentation), else on the blocking pool.
    pub async fn quick<T, F>(&self, store: &Arc<dyn Store>, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    {
        let now = self.micros();
        let last = self.last.swap(now, Ordering::AcqRel);
        let before = self.before.swap(last, Ordering::AcqRel);
        if store.in_process()
            && self.busy.load(Ordering::Acquire) == 0
            && now.saturating_sub(before) >= WINDOW_US
            && now >= self.off_until.load(Ordering::Acquire)
        {
            let out = f(store.as_ref());
            let took = self.micros().saturating_sub(now);
            if took > SLOW_US {
                self.off_until.store(now + took + OFF_US, Ordering::Release);
                tracing::debug!(
                    took_us = took,
                    "a short store call took long; using the pool"
                );
            }
            return Ok(out?);
        }
        self.pool(store, f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::SqliteStore;

    /// A short call on an in-process store runs on the calling thread,
    /// unless the server is busy (a third call close after two others,
    /// another call on the pool) or a call in place took long.
    #[tokio::test(flavor = "current_thread")]
    async fn a_quick_store_call_runs_in_place_unless_the_server_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        assert!(store.in_process());
        let calls = StoreCalls::default();
        let here = std::thread::current().id();
        let quick = || calls.quick(&store, |_| Ok(std::thread::current().id()));
        assert_eq!(quick().await.unwrap(), here);
        // A second right after: still in place (one job's chain of calls).
        assert_eq!(quick().await.unwrap(), here);
        // A third right after two others: the server is busy, the pool
        // takes it. (The two calls' times are set ahead, so that a test
        // thread descheduled for a moment cannot make them look far apart.)
        let ahead = calls.micros() + 1_000_000;
        calls.last.store(ahead, Ordering::Release);
        calls.before.store(ahead, Ordering::Release);
        assert_ne!(quick().await.unwrap(), here);
        calls.last.store(0, Ordering::Release);
        calls.before.store(0, Ordering::Release);
        assert_eq!(quick().await.unwrap(), here);
        // One that took long in place (a stalled disk) sends the next ones
        // to the pool for a while.
        tokio::time::sleep(Duration::from_micros(2 * WINDOW_US)).await;
        let slow_one = calls.quick(&store, |_| {
            std::thread::sleep(Duration::from_micros(2 * SLOW_US));
            Ok(std::thread::current().id())
        });
        assert_eq!(slow_one.await.unwrap(), here);
        tokio::time::sleep(Duration::from_micros(2 * WINDOW_US)).await;
        assert_ne!(quick().await.unwrap(), here);
        calls.off_until.store(0, Ordering::Release);
        tokio::time::sleep(Duration::from_micros(2 * WINDOW_US)).await;
        assert_eq!(quick().await.unwrap(), here);
        // While another call is on the pool, a short one goes there too and
        // cannot wait behind it on the async thread.
        let calls = Arc::new(calls);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let slow = {
            let (calls, store) = (calls.clone(), store.clone());
            tokio::spawn(async move {
                calls
                    .pool(&store, move |_| {
                        go_rx.recv().ok();
                        Ok(())
                    })
                    .await
            })
        };
        while calls.busy.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_micros(2 * WINDOW_US)).await;
        let ran_on = calls
            .quick(&store, |_| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, here);
        go_tx.send(()).unwrap();
        slow.await.unwrap().unwrap();
        assert_eq!(calls.busy.load(Ordering::Acquire), 0);
    }
}
