//! What the server is doing and has done: the calls running now, and per typeid and method the
//! number of calls, of errors, and their total time. `debug_info()` reports both; a plain call
//! running past `ServerConfig::slow_call_threshold` is logged once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap as FastMap;
use parking_lot::Mutex;
use slotmap::{DefaultKey, SlotMap};

use crate::registry::Entry;
use crate::wire::{MethodStats, RunningCall};

/// The server's record of calls (see the module documentation).
#[derive(Default)]
pub(super) struct Activity {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: SlotMap<DefaultKey, Running>,
    /// By (typeid registration, method index).
    stats: FastMap<(usize, usize), Stats>,
}

struct Running {
    entry: Arc<Entry>,
    index: usize,
    object: u64,
    connection: u64,
    started: Instant,
    /// Whether the call has been logged as slow.
    logged: bool,
}

#[derive(Default)]
struct Stats {
    typeid: String,
    method: &'static str,
    calls: u64,
    errors: u64,
    total: Duration,
}

/// A call in the record, from its start to its end (when this is dropped, also for a call that
/// was cancelled).
pub(super) struct Ticket {
    state: Arc<super::State>,
    key: DefaultKey,
    failed: bool,
}

impl Ticket {
    /// Marks the call as failed (an error, a panic, a typed error the method returned).
    pub(super) fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.state.activity.finish(self.key, self.failed);
    }
}

impl Activity {
    /// Records the start of a call of method `index` of `entry` on `object`.
    pub(super) fn start(
        state: &Arc<super::State>,
        entry: &Arc<Entry>,
        index: usize,
        object: u64,
        connection: u64,
    ) -> Ticket {
        let key = state.activity.inner.lock().running.insert(Running {
            entry: entry.clone(),
            index,
            object,
            connection,
            started: Instant::now(),
            logged: false,
        });
        Ticket {
            state: state.clone(),
            key,
            failed: false,
        }
    }

    fn finish(&self, key: DefaultKey, failed: bool) {
        let mut inner = self.inner.lock();
        let Some(call) = inner.running.remove(key) else {
            return;
        };
        let took = call.started.elapsed();
        let method = call.entry.methods[call.index].name;
        let stats = inner
            .stats
            .entry((Arc::as_ptr(&call.entry) as usize, call.index))
            .or_insert_with(|| Stats {
                typeid: call.entry.typeid.to_string(),
                method,
                ..Stats::default()
            });
        stats.calls += 1;
        stats.errors += u64::from(failed);
        stats.total += took;
        drop(inner);
        if call.logged {
            tracing::warn!(
                typeid = &*call.entry.typeid,
                method,
                "a slow call of {method} on {:?} object {} finished after {took:.1?}",
                &*call.entry.typeid,
                call.object,
            );
        }
    }

    /// Logs, once each, the plain calls running longer than `threshold`.
    pub(super) fn log_slow(&self, threshold: Duration) {
        let mut inner = self.inner.lock();
        for (_, call) in inner.running.iter_mut() {
            let method = &call.entry.methods[call.index];
            if call.logged || method.is_async {
                continue;
            }
            let running = call.started.elapsed();
            if running >= threshold {
                call.logged = true;
                tracing::warn!(
                    typeid = &*call.entry.typeid,
                    method = method.name,
                    "a call of {} on {:?} object {} (connection {}) has run for {running:.1?}; \
                     plain methods run on worker threads, so only calls that need its object's \
                     lock wait for it",
                    method.name,
                    &*call.entry.typeid,
                    call.object,
                    call.connection,
                );
            }
        }
    }

    /// The calls running now, oldest first, and the statistics by typeid and method.
    pub(super) fn snapshot(&self) -> (Vec<RunningCall>, Vec<MethodStats>) {
        let inner = self.inner.lock();
        let now = Instant::now();
        let mut running: Vec<(Instant, RunningCall)> = inner
            .running
            .values()
            .map(|call| {
                let method = &call.entry.methods[call.index];
                (
                    call.started,
                    RunningCall {
                        typeid: call.entry.typeid.to_string(),
                        method: method.name.to_string(),
                        object: call.object,
                        connection: call.connection,
                        is_async: method.is_async,
                        elapsed: now.saturating_duration_since(call.started),
                    },
                )
            })
            .collect();
        running.sort_by_key(|(started, _)| *started);
        let mut stats: Vec<MethodStats> = inner
            .stats
            .values()
            .map(|s| MethodStats {
                typeid: s.typeid.clone(),
                method: s.method.to_string(),
                calls: s.calls,
                errors: s.errors,
                total: s.total,
            })
            .collect();
        stats.sort_by(|a, b| (&a.typeid, &a.method).cmp(&(&b.typeid, &b.method)));
        (running.into_iter().map(|(_, call)| call).collect(), stats)
    }
}
