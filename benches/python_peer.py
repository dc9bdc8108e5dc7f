#!/usr/bin/env python3
"""CPython's multiprocessing.managers on the work of benches/manager_bench.rs.

The peer of the Rust benchmark suite: a BaseManager server in one process (started with
manager.start(), over TCP on 127.0.0.1 or a Unix socket) and clients in others, doing the same
workloads and reporting the same figures, under the same ids, so that the ratio to Python can
be measured on any machine with python3. Standard library only.

    python3 benches/python_peer.py            # the full run (about two and a half minutes)
    python3 benches/python_peer.py --quick    # a smoke run (about 30 s)
    python3 benches/python_peer.py --quick --only isolation
    python3 benches/python_peer.py --json py.json
    cargo bench --bench manager_bench -- --python   # runs this and adds a python column

A table goes to stderr; the figures go to stdout as JSON (or to --json PATH).

Where Python cannot do the same thing, the nearest thing is measured and the label says so:
there is no async proxy (only the blocking one is measured), and a proxy shared by 16 threads
opens one connection per thread (Python has no multiplexed connection). So the isolation
figure "on the same connection" is, for Python, slow calls made by other threads of the
measuring process, each on a connection of its own.
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
from multiprocessing.managers import BaseManager

X = 42


class Bench:
    """The referent: one integer. get_x is the round trip, echo moves bytes both ways, slow
    keeps a server thread busy."""

    def __init__(self, x=X):
        self.x = x

    def get_x(self):
        return self.x

    def echo(self, data):
        return data

    def slow(self, ms, until_us=0):
        """Sleeps ms milliseconds in the server thread that runs it, but not past until_us
        (microseconds since the Unix epoch; 0: no limit); returns the microseconds slept."""
        delay = ms / 1000.0
        if until_us:
            delay = min(delay, until_us / 1e6 - time.time())
        began = time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return int((time.perf_counter() - began) * 1e6)


_shared = None
_slow = None


def get_shared():
    """The one instance every client of 'shared' gets (Python's callable=lambda: obj)."""
    global _shared
    if _shared is None:
        _shared = Bench(X)
    return _shared


def get_slow():
    """Object A of the isolation figures (the slow calls); object B, the getter's, is 'shared'."""
    global _slow
    if _slow is None:
        _slow = Bench(X)
    return _slow


class BenchManager(BaseManager):
    pass


BenchManager.register("shared", callable=get_shared)
BenchManager.register("slow", callable=get_slow)
BenchManager.register("obj", callable=Bench)


# -------------------------------------------------------------------------------------------
# Statistics.


def percentile(sorted_ns, q):
    if not sorted_ns:
        return float("nan")
    rank = min(max(int(-(-q * len(sorted_ns) // 1)), 1), len(sorted_ns))
    return sorted_ns[rank - 1] / 1000.0


def median(values):
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def stats(rounds):
    every = sorted(ns for r in rounds for ns in r)
    return {
        "samples": len(every),
        "median_us": percentile(every, 0.5),
        "p99_us": percentile(every, 0.99),
        "mean_us": sum(every) / max(len(every), 1) / 1000.0,
        "min_us": every[0] / 1000.0 if every else float("nan"),
        "max_us": every[-1] / 1000.0 if every else float("nan"),
        "round_medians_us": [percentile(sorted(r), 0.5) for r in rounds],
    }


# -------------------------------------------------------------------------------------------
# Client jobs: each runs in a process of its own.


def job_latency(m, warmup, iters, rounds):
    proxy = m.shared()
    for _ in range(warmup):
        proxy.get_x()
    clock = time.perf_counter_ns
    all_rounds = []
    for _ in range(rounds):
        samples = []
        for _ in range(iters):
            start = clock()
            x = proxy.get_x()
            samples.append(clock() - start)
            if x != X:
                raise RuntimeError("get_x returned %r" % (x,))
        all_rounds.append(samples)
    return stats(all_rounds)


def job_throughput(m, threads, windows):
    proxy = m.shared()
    for _ in range(200):
        proxy.get_x()
    results = []
    for start, end in windows:
        late_ms = max(0.0, time.time() - start) * 1000.0
        time.sleep(max(0.0, start - time.time()))
        began = time.perf_counter()
        stop = began + (end - start)
        counts = [0] * threads
        finished = [began] * threads
        errors = []

        def loop(i):
            try:
                n = 0
                while time.perf_counter() < stop:
                    proxy.get_x()
                    n += 1
                counts[i] = n
                finished[i] = time.perf_counter()
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        if threads == 1:
            loop(0)
        else:
            workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        if errors:
            raise errors[0]
        results.append(
            {"calls": sum(counts), "elapsed_s": max(finished) - began, "late_ms": late_ms}
        )
    return results


def job_echo(m, size, warmup_s, round_s, rounds):
    proxy = m.shared()
    clock = time.perf_counter_ns

    def run(duration):
        data = bytes(i % 256 for i in range(size))
        samples = []
        began = time.perf_counter()
        end = began + duration
        while True:
            start = clock()
            data = proxy.echo(data)
            samples.append(clock() - start)
            if len(data) != size:
                raise RuntimeError("echo of %d bytes came back as %d" % (size, len(data)))
            if time.perf_counter() >= end:
                break
        return len(samples) / (time.perf_counter() - began), samples

    run(warmup_s)
    rates, all_rounds = [], []
    for _ in range(rounds):
        rate, samples = run(round_s)
        rates.append(rate)
        all_rounds.append(samples)
    return {"round_rates": rates, "latency": stats(all_rounds)}


def create_drop_for(m, threads, duration):
    began = time.perf_counter()
    end = began + duration
    counts = [0] * threads
    errors = []

    def loop(i):
        try:
            n = 0
            while time.perf_counter() < end:
                obj = m.obj(i)
                del obj
                n += 1
            counts[i] = n
        except BaseException as e:
            errors.append(e)

    if threads == 1:
        loop(0)
    else:
        workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    if errors:
        raise errors[0]
    return sum(counts), time.perf_counter() - began


def job_create_drop(m, threads, warmup_s, round_s, rounds):
    before = m._number_of_objects()
    create_drop_for(m, threads, warmup_s)
    rates, created = [], 0
    for _ in range(rounds):
        n, elapsed = create_drop_for(m, threads, round_s)
        rates.append(n / elapsed)
        created += n
    return {
        "round_rates": rates,
        "created": created,
        "objects_before": before,
        "objects_after": m._number_of_objects(),
    }


class SlowThreads:
    """The slow calls of each phase of an isolation schedule: as many threads as the largest
    phase, each on a connection of its own (a proxy used from a thread opens that thread's
    connection), thread i taking part in the phases of more than i slow calls. Each makes its
    calls from the phase's start, each again as soon as it returns, until the phase's end (no
    call sleeps past it); the first calls are staggered (the i-th of n sleeps (i+1)/n of the
    time) so that calls end, and are made again, spread over the phase."""

    def __init__(self, proxy, schedule):
        self.schedule = schedule
        self.phases = schedule["phases"]
        self.count = max(p["slow"] for p in self.phases)
        self.lock = threading.Lock()
        self.calls = [0] * len(self.phases)
        self.slept_us = [0] * len(self.phases)
        self.late_ms = [0.0] * len(self.phases)
        self.errors = []
        self.ready = threading.Barrier(self.count + 1)
        self.threads = [
            threading.Thread(target=self.run, args=(proxy, i), daemon=True)
            for i in range(self.count)
        ]
        for t in self.threads:
            t.start()
        # Every thread has connected (or failed).
        self.ready.wait()

    def run(self, proxy, i):
        try:
            try:
                proxy.slow(0, 0)
            finally:
                self.ready.wait()
            slow_ms = self.schedule["slow_ms"]
            for k, phase in enumerate(self.phases):
                n = phase["slow"]
                if i >= n:
                    continue
                start, until = phase["load"]
                late = max(0.0, time.time() - start) * 1000.0
                time.sleep(max(0.0, start - time.time()))
                ms = slow_ms * (i + 1) // n
                calls = slept = 0
                until_us = int(until * 1e6)
                # Stop a millisecond short: a call made later would sleep (nearly) nothing.
                while time.time() + 0.001 < until:
                    slept += proxy.slow(ms, until_us)
                    calls += 1
                    ms = slow_ms
                with self.lock:
                    self.calls[k] += calls
                    self.slept_us[k] += slept
                    self.late_ms[k] = max(self.late_ms[k], late)
        except BaseException as e:  # reported by join()
            self.errors.append(e)

    def join(self):
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return [
            {
                "slow": phase["slow"],
                "calls": self.calls[k],
                "slept_us": self.slept_us[k],
                "load_s": phase["load"][1] - phase["load"][0],
                "late_ms": self.late_ms[k],
            }
            for k, phase in enumerate(self.phases)
        ]


def getter_window(proxy, span, cut_at=None):
    """Sequential get_x round trips through span (seconds since the epoch); counts the calls
    that end at or after cut_at (the end of a phase, when its slow calls are cut short)."""
    start, end = span
    late_ms = max(0.0, time.time() - start) * 1000.0
    time.sleep(max(0.0, start - time.time()))
    stop = time.perf_counter() + (end - time.time())
    clock = time.perf_counter_ns
    samples, cut = [], 0
    while time.perf_counter() < stop:
        began = clock()
        x = proxy.get_x()
        samples.append(clock() - began)
        if x != X:
            raise RuntimeError("get_x returned %r" % (x,))
        if cut_at is not None and time.time() >= cut_at:
            cut += 1
    return samples, cut, late_ms


def job_isolation(m, local_load, schedule):
    """get_x round trips on 'shared' through the schedule's idle and measuring windows; with
    local_load, threads of this process make each phase's slow calls."""
    proxy = m.shared()
    for _ in range(200):
        proxy.get_x()
    load = SlowThreads(m.slow(), schedule) if local_load else None
    idle, loaded, late_ms = [], [], 0.0
    phases = schedule["phases"]
    for i, window in enumerate(schedule["idle"]):
        samples, cut, late = getter_window(proxy, window)
        idle.append((samples, cut))
        late_ms = max(late_ms, late)
        if i >= len(phases):
            break
        samples, cut, late = getter_window(proxy, phases[i]["measure"], phases[i]["load"][1])
        loaded.append((samples, cut))
        late_ms = max(late_ms, late)
    slow = load.join() if load else []
    sides = []
    for n in sorted(set(p["slow"] for p in phases)):
        mine = [i for i, p in enumerate(phases) if p["slow"] == n]
        windows = sorted(set(w for i in mine for w in (i, i + 1)))
        sides.append(
            {
                "slow": n,
                "idle": stats([idle[w][0] for w in windows]),
                "loaded": stats([loaded[i][0] for i in mine]),
                "loaded_cut": sum(loaded[i][1] for i in mine),
            }
        )
    return {"sides": sides, "slow": slow, "late_ms": late_ms}


def job_slow_load(m, schedule):
    """Each phase's slow calls, from threads of this process (a connection each)."""
    return {"phases": SlowThreads(m.slow(), schedule).join()}


JOBS = {
    "latency": job_latency,
    "throughput": job_throughput,
    "echo": job_echo,
    "create_drop": job_create_drop,
    "isolation": job_isolation,
    "slow_load": job_slow_load,
}


def client_main(kind, args, address, authkey, results, index=0):
    try:
        m = BenchManager(address=address, authkey=authkey)
        m.connect()
        results.put((index, "ok", JOBS[kind](m, **args)))
    except BaseException as e:
        results.put((index, "error", "%s: %r" % (kind, e)))


# -------------------------------------------------------------------------------------------
# The orchestrator.


def run_jobs(ctx, jobs, address, authkey, timeout):
    """Runs each (kind, args) of jobs in a client process of its own, all at once; returns
    their results in the same order."""
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=client_main,
            args=(kind, args, address, authkey, results, i),
            daemon=True,
        )
        for i, (kind, args) in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    out = [None] * len(procs)
    deadline = time.time() + timeout
    try:
        for _ in procs:
            index, status, value = results.get(timeout=max(1.0, deadline - time.time()))
            if status != "ok":
                raise RuntimeError(value)
            out[index] = value
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return out


def run_clients(ctx, kind, args, address, authkey, count, timeout):
    return run_jobs(ctx, [(kind, args)] * count, address, authkey, timeout)


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)


class Plan:
    def __init__(self, quick, memory_objects):
        if quick:
            self.latency = dict(warmup=300, iters=2000, rounds=1)
            self.window, self.tput_rounds = 0.5, 1
            self.echo = dict(warmup_s=0.1, round_s=0.3, rounds=1)
            self.create = dict(warmup_s=0.1, round_s=0.4, rounds=2)
            self.memory_objects = 1000
            self.isolation = dict(
                slow_ms=500, idle=0.2, ramp=0.15, measure=0.7, drain=0.1, rounds=1
            )
        else:
            self.latency = dict(warmup=2000, iters=10000, rounds=4)
            self.window, self.tput_rounds = 2.0, 3
            self.echo = dict(warmup_s=0.3, round_s=1.0, rounds=3)
            self.create = dict(warmup_s=0.3, round_s=1.0, rounds=3)
            self.memory_objects = 10000
            self.isolation = dict(
                slow_ms=1000, idle=0.4, ramp=0.2, measure=1.5, drain=0.1, rounds=2
            )
        if memory_objects:
            self.memory_objects = memory_objects


class Suite:
    def __init__(self, ctx, plan, authkey, workdir):
        self.ctx, self.plan, self.authkey, self.workdir = ctx, plan, authkey, workdir
        self.figures, self.details, self.warnings = [], {}, []

    def figure(self, id, label, unit, value, extra=""):
        self.figures.append({"id": id, "label": label, "unit": unit, "value": value})
        log("  %-52s %s%s" % (label, fmt(unit, value), extra))

    def start(self, address):
        m = BenchManager(address=address, authkey=self.authkey, ctx=self.ctx)
        m.start()
        return m

    def clients(self, kind, args, address, count, timeout):
        return run_clients(self.ctx, kind, args, address, self.authkey, count, timeout)

    def latency(self, tcp, unix):
        log("round trips (sequential get_x, blocking proxy)")
        p = self.plan.latency
        timeout = 60 + (p["warmup"] + p["iters"] * p["rounds"]) * 0.002
        for transport, socket, address in (("tcp", "TCP", tcp), ("unix", "Unix", unix)):
            result = self.clients("latency", p, address, 1, timeout)[0]
            ident = "rtt.%s.blocking" % transport
            label = "round trip %s, blocking proxy" % socket
            self.figure(ident + ".median", label + ", median", "us", result["median_us"])
            self.figure(ident + ".p99", label + ", p99", "us", result["p99_us"])
            self.details[ident] = result

    def throughput_run(self, address, clients, threads):
        lead = 1.0 + 0.15 * clients
        at = time.time() + lead
        windows = []
        for _ in range(self.plan.tput_rounds):
            windows.append((at, at + self.plan.window))
            at += self.plan.window + 0.15
        timeout = (at - time.time()) + 60
        args = dict(threads=threads, windows=windows)
        results = self.clients("throughput", args, address, clients, timeout)
        rates = []
        for i in range(len(windows)):
            rates.append(sum(r[i]["calls"] / max(r[i]["elapsed_s"], 1e-9) for r in results))
            late = max(r[i]["late_ms"] for r in results)
            if late > 50 * self.plan.window:
                self.warnings.append(
                    "throughput, %d clients: a client started a window %.0f ms late"
                    % (clients, late)
                )
        return rates

    def throughput(self, tcp):
        log("throughput (get_x over TCP, each client its own process)")
        for clients in (1, 4, 16):
            rates = self.throughput_run(tcp, clients, 1)
            label = "throughput, %d client%s" % (clients, "" if clients == 1 else "s")
            self.figure("tput.clients.%d" % clients, label, "calls/s", median(rates))
            self.details["tput.clients.%d" % clients] = rates
        rates = self.throughput_run(tcp, 1, 16)
        self.figure(
            "tput.one_conn.16",
            "throughput, 1 process, 16 threads (a connection each)",
            "calls/s",
            median(rates),
        )
        self.details["tput.one_conn.16"] = rates

    def echo(self, tcp):
        log("echo (sequential, over TCP; the answer is sent again)")
        for size, name, text in (
            (64, "64B", "64 B"),
            (64 << 10, "64KiB", "64 KiB"),
            (1 << 20, "1MiB", "1 MiB"),
        ):
            p = self.plan.echo
            args = dict(p, size=size)
            timeout = 60 + 2 * (p["warmup_s"] + p["round_s"] * p["rounds"])
            result = self.clients("echo", args, tcp, 1, timeout)[0]
            mib = size / float(1 << 20)
            label = "echo %s, payload each way" % text
            self.figure("echo." + name, label, "MiB/s", median(result["round_rates"]) * mib)
            self.details["echo." + name] = result

    def create_drop(self, tcp, unix):
        # CPython opens a connection for the create, one for the proxy's incref and one for
        # the creating call's decref, and one more for each drop; its sockets do not set
        # TCP_NODELAY, so over TCP each of those requests waits for a delayed ACK (~40 ms on
        # Linux). The Unix socket figure shows the cost without that stall.
        log("create + drop (a factory object created, its proxy dropped)")
        runs = [(1, "tcp", tcp, ""), (16, "tcp", tcp, ""), (1, "unix", unix, ".unix")]
        for threads, transport, address, suffix in runs:
            p = self.plan.create
            args = dict(p, threads=threads)
            timeout = 60 + 2 * (p["warmup_s"] + p["round_s"] * p["rounds"])
            result = self.clients("create_drop", args, address, 1, timeout)[0]
            label = "create + drop, 1 thread" if threads == 1 else "create + drop, 16 threads"
            if transport == "unix":
                label += ", Unix socket"
            ident = "create_drop.%d%s" % (threads, suffix)
            self.figure(ident, label, "objects/s", median(result["round_rates"]))
            if result["objects_after"] != result["objects_before"]:
                self.warnings.append(
                    "%s: %d objects were not released"
                    % (label, result["objects_after"] - result["objects_before"])
                )
            self.details[ident] = result

    def isolation_schedule(self, lead):
        """The schedule of the isolation figures (as manager_bench.rs): after lead, an idle
        window, then each phase and an idle window after it, round by round; spans in seconds
        since the epoch."""
        p = self.plan.isolation
        gap = 0.02
        at = time.time() + lead
        idle = [(at, at + p["idle"])]
        at += p["idle"] + gap
        phases = []
        for round in range(p["rounds"]):
            counts = list(ISOLATION_SLOW)
            if round % 2 == 1:
                counts.reverse()
            for n in counts:
                # The measuring window ends ISOLATION_TAIL before the slow calls do: a getter
                # call still waiting at their end is counted as cut short.
                measure = (at + p["ramp"], at + p["ramp"] + p["measure"])
                end = measure[1] + ISOLATION_TAIL
                phases.append({"slow": n, "load": (at, end), "measure": measure})
                at = end + p["drain"]
                idle.append((at, at + p["idle"]))
                at += p["idle"] + gap
        return {"idle": idle, "phases": phases, "slow_ms": p["slow_ms"]}

    def isolation(self):
        # CPython's server runs each connection in a thread of its own, so a slow call holds
        # only its connection's thread. It has no connection shared by threads: "same_conn" is
        # other threads of the measuring process (a connection each), "other_conn" another
        # process's threads.
        p = self.plan.isolation
        log(
            "isolation (get_x on one object while %s slow calls of %d ms run on another, over TCP)"
            % ("/".join(str(n) for n in ISOLATION_SLOW), p["slow_ms"])
        )
        m = self.start(("127.0.0.1", 0))
        try:
            for local_load in (True, False):
                # Time for the clients to start and connect (64 connections for the slow calls).
                schedule = self.isolation_schedule(1.5 + 0.01 * max(ISOLATION_SLOW))
                jobs = [("isolation", dict(local_load=local_load, schedule=schedule))]
                if not local_load:
                    jobs.append(("slow_load", dict(schedule=schedule)))
                timeout = schedule["idle"][-1][1] - time.time() + 60
                results = run_jobs(self.ctx, jobs, m.address, self.authkey, timeout)
                result = results[0]
                slow = result["slow"] if local_load else results[1]["phases"]
                mode, label = (
                    ("same_conn", "in other threads")
                    if local_load
                    else ("other_conn", "in another process")
                )
                late = max([result["late_ms"]] + [c["late_ms"] for c in slow])
                if late > 50:
                    self.warnings.append(
                        "isolation, %s: a client started a window %.0f ms late" % (label, late)
                    )
                for side in result["sides"]:
                    n = side["slow"]
                    phases = [c for c in slow if c["slow"] == n]
                    load_s = sum(c["load_s"] for c in phases)
                    running = sum(c["slept_us"] for c in phases) / 1e6 / max(load_s, 1e-9)
                    idle, loaded = side["idle"], side["loaded"]
                    ident = "isolation.%s.%d" % (mode, n)
                    what = "isolation, %d slow %s" % (n, label)
                    cut = side["loaded_cut"]
                    for q in ("median", "p99"):
                        value, base = loaded[q + "_us"], idle[q + "_us"]
                        extra = "   idle %s   %.2fx" % (fmt("us", base), value / base)
                        if cut:
                            extra += "   (%d of %d get_x cut short)" % (cut, loaded["samples"])
                        self.figure("%s.%s" % (ident, q), "%s, %s" % (what, q), "us", value, extra)
                    self.details[ident] = {
                        "slow": n,
                        "slow_ms": schedule["slow_ms"],
                        "idle": idle,
                        "loaded": loaded,
                        "loaded_cut": side["loaded_cut"],
                        "median_ratio": loaded["median_us"] / idle["median_us"],
                        "p99_ratio": loaded["p99_us"] / idle["p99_us"],
                        "slow_calls": sum(c["calls"] for c in phases),
                        "slow_running_mean": running,
                        "phases": phases,
                    }
        finally:
            m.shutdown()

    def memory(self):
        # Over a Unix socket: the memory an object takes does not depend on the transport,
        # and CPython's creates over TCP wait ~40 ms each (see create_drop).
        n = self.plan.memory_objects
        log("memory (server VmRSS with %d idle objects held by one client)" % n)
        m = self.start(os.path.join(self.workdir, "memory.sock"))
        try:
            pid = m._process.pid
            for i in range(100):
                obj = m.obj(i)
                del obj
            before = m._number_of_objects()
            time.sleep(0.2)
            rss_before = rss_bytes(pid)
            began = time.perf_counter()
            held = [m.obj(i) for i in range(n)]
            create_s = time.perf_counter() - began
            holding = m._number_of_objects()
            if holding != before + n:
                raise RuntimeError("the server holds %d objects, expected %d" % (holding, before + n))
            time.sleep(0.3)
            rss_held = rss_bytes(pid)
            began = time.perf_counter()
            del held
            after = m._number_of_objects()
            release_s = time.perf_counter() - began
            time.sleep(0.3)
            rss_after = rss_bytes(pid)
        finally:
            m.shutdown()
        sample = Bench(1)
        referent = sys.getsizeof(sample) + sys.getsizeof(sample.__dict__)
        per_object = (rss_held - rss_before) / float(n) - referent
        self.figure("memory.per_object", "server memory per idle object", "B/object", per_object)
        self.details["memory"] = {
            "objects": n,
            "transport": "unix",
            "referent_bytes": referent,
            "rss_before": rss_before,
            "rss_held": rss_held,
            "rss_after_release": rss_after,
            "objects_before": before,
            "objects_after_release": after,
            "create_s": create_s,
            "release_s": release_s,
            "released": after == before,
        }


def fmt(unit, v):
    if v != v:
        return "-"
    if unit == "us":
        return "%.1f ms" % (v / 1000.0) if v >= 10000 else "%.1f us" % v
    if unit in ("calls/s", "objects/s"):
        suffix = "/s" if unit == "calls/s" else " obj/s"
        if v >= 1e6:
            return "%.2fM%s" % (v / 1e6, suffix)
        if v >= 1e3:
            return "%.1fk%s" % (v / 1e3, suffix)
        return "%.0f%s" % (v, suffix)
    if unit == "MiB/s":
        return ("%.2f MiB/s" if v < 10 else "%.1f MiB/s") % v
    if unit == "B/object":
        return "%.0f B/obj" % v
    return "%g %s" % (v, unit)


def log(text):
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


GROUPS = ("rtt", "throughput", "echo", "create", "isolation", "memory")
ISOLATION_SLOW = (1, 8, 64)
ISOLATION_TAIL = 0.05


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 30 s")
    parser.add_argument("--json", metavar="PATH", help="write the figures there, not to stdout")
    parser.add_argument("--only", metavar="GROUPS", help="comma-separated: " + ", ".join(GROUPS))
    parser.add_argument(
        "--memory-objects", type=int, metavar="N", help="objects for the memory figure"
    )
    options = parser.parse_args()
    groups = set(GROUPS)
    if options.only:
        groups = set(g.strip() for g in options.only.split(","))
        unknown = groups - set(GROUPS)
        if unknown:
            parser.error("unknown group(s): %s" % ", ".join(sorted(unknown)))

    began = time.time()
    ctx = mp.get_context("spawn")
    workdir = tempfile.mkdtemp(prefix="manager-bench-py-")
    suite = Suite(ctx, Plan(options.quick, options.memory_objects), os.urandom(32), workdir)
    try:
        if groups & {"rtt", "throughput", "echo", "create"}:
            tcp_manager = suite.start(("127.0.0.1", 0))
            unix_manager = suite.start(os.path.join(workdir, "py.sock"))
            try:
                tcp, unix = tcp_manager.address, unix_manager.address
                if "rtt" in groups:
                    suite.latency(tcp, unix)
                if "throughput" in groups:
                    suite.throughput(tcp)
                if "echo" in groups:
                    suite.echo(tcp)
                if "create" in groups:
                    suite.create_drop(tcp, unix)
            finally:
                tcp_manager.shutdown()
                unix_manager.shutdown()
        if "isolation" in groups:
            suite.isolation()
        if "memory" in groups:
            if os.path.exists("/proc/self/status"):
                suite.memory()
            else:
                suite.warnings.append("the memory figure needs /proc (Linux); skipped")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for warning in suite.warnings:
        log("warning: " + warning)
    report = {
        "suite": "python_peer",
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "mode": "quick" if options.quick else "full",
        "cores": os.cpu_count(),
        "unix_time": int(time.time()),
        "elapsed_s": time.time() - began,
        "figures": suite.figures,
        "warnings": suite.warnings,
        "details": suite.details,
    }
    text = json.dumps(report, indent=2)
    if options.json:
        with open(options.json, "w") as f:
            f.write(text + "\n")
        log("figures written to %s" % options.json)
    else:
        sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
