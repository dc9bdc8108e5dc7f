//! What the server is doing and has done: the calls running now, and per typeid and method the
//! number of calls, of errors, and their total time. `debug_info()` reports both; a plain call
//! running past `ServerConfig::slow_call_threshold` is logged once.
//!
//! A call costs little here and takes no lock the whole server shares: its method's counters
//! are atomics, found in a map made once at bind (by the registration's address and the
//! method's index), and the record of the calls running is split in shards by connection, so
//! calls of different connections never wait for each other (a connection's own calls mostly
//! come one after another).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::HashMap as FastMap;
use parking_lot::Mutex;
use slotmap::{DefaultKey, SlotMap};

use crate::registry::{Entry, Registry};
use crate::wire::{MethodStats, RunningCall};

/// How many shards the record of running calls has.
const SHARDS: usize = 16;

/// The server's record of calls (see the module documentation).
pub(super) struct Activity {
    running: [Mutex<SlotMap<DefaultKey, Running>>; SHARDS],
    /// By registration (the address of its `Entry`): each method's counters, by index.
    stats: FastMap<usize, Counters>,
}

/// One registration's counters.
struct Counters {
    entry: Arc<Entry>,
    methods: Box<[MethodCounters]>,
}

#[derive(Default)]
struct MethodCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
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

/// A call in the record, from its start to its end (when this is dropped, also for a call that
/// was cancelled).
pub(super) struct Ticket {
    state: Arc<super::State>,
    shard: usize,
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
        self.state
            .activity
            .finish(self.shard, self.key, self.failed);
    }
}

impl Activity {
    /// The record of a server serving `registry`, with a counter for each of its methods.
    pub(super) fn new(registry: &Registry) -> Activity {
        let stats = registry
            .entries()
            .map(|entry| {
                let methods = entry.methods.iter().map(|_| MethodCounters::default());
                let counters = Counters {
                    entry: entry.clone(),
                    methods: methods.collect(),
                };
                (Arc::as_ptr(entry) as usize, counters)
            })
            .collect();
        Activity {
            running: std::array::from_fn(|_| Mutex::new(SlotMap::new())),
            stats,
        }
    }

    /// Records the start of a call of method `index` of `entry` on `object`.
    pub(super) fn start(
        state: &Arc<super::State>,
        entry: &Arc<Entry>,
        index: usize,
        object: u64,
        connection: u64,
    ) -> Ticket {
        let shard = connection as usize % SHARDS;
        let key = state.activity.running[shard].lock().insert(Running {
            entry: entry.clone(),
            index,
            object,
            connection,
            started: Instant::now(),
            logged: false,
        });
        Ticket {
            state: state.clone(),
            shard,
            key,
            failed: false,
        }
    }

    fn finish(&self, shard: usize, key: DefaultKey, failed: bool) {
        let Some(call) = self.running[shard].lock().remove(key) else {
            return;
        };
        let took = call.started.elapsed();
        let counters = self
            .stats
            .get(&(Arc::as_ptr(&call.entry) as usize))
            .and_then(|counters| counters.methods.get(call.index));
        if let Some(counters) = counters {
            counters.calls.fetch_add(1, Ordering::Relaxed);
            counters
                .errors
                .fetch_add(u64::from(failed), Ordering::Relaxed);
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            counters.total_ns.fetch_add(ns, Ordering::Relaxed);
        }
        if call.logged {
            let method = call.entry.methods[call.index].name;
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
        for shard in &self.running {
            let mut running = shard.lock();
            for (_, call) in running.iter_mut() {
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
    }

    /// The calls running now, oldest first, and the statistics by typeid and method (of the
    /// methods called at least once).
    pub(super) fn snapshot(&self) -> (Vec<RunningCall>, Vec<MethodStats>) {
        let now = Instant::now();
        let mut running: Vec<(Instant, RunningCall)> = Vec::new();
        for shard in &self.running {
            running.extend(shard.lock().values().map(|call| {
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
            }));
        }
        running.sort_by_key(|(started, _)| *started);
        let mut stats: Vec<MethodStats> = self
            .stats
            .values()
            .flat_map(|counters| {
                let entry = &counters.entry;
                entry
                    .methods
                    .iter()
                    .zip(&counters.methods)
                    .filter_map(move |(method, counted)| {
                        let calls = counted.calls.load(Ordering::Relaxed);
                        (calls > 0).then(|| MethodStats {
                            typeid: entry.typeid.to_string(),
                            method: method.name.to_string(),
                            calls,
                            errors: counted.errors.load(Ordering::Relaxed),
                            total: Duration::from_nanos(counted.total_ns.load(Ordering::Relaxed)),
                        })
                    })
            })
            .collect();
        stats.sort_by(|a, b| (&a.typeid, &a.method).cmp(&(&b.typeid, &b.method)));
        (running.into_iter().map(|(_, call)| call).collect(), stats)
    }
}
