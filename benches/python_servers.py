#!/usr/bin/env python3
"""CPython clients against CPython's own SyncManager server and against `manager serve`, in the
same run: the figures a Python user sees when switching servers.

    cargo build --release
    python3 benches/python_servers.py                       # target/release/manager
    python3 benches/python_servers.py --manager PATH --quick
    MANAGER_SERVE_ARGS="--python-spin-us 30" python3 benches/python_servers.py  # serve options
    python3 benches/python_servers.py --rounds 3   # the servers alternate; medians of 3 rounds

For each server it measures, with client processes started by this script:
  - round trip: one client, `len(d)` on a dict proxy, median of rounds (microseconds);
  - throughput: 1, 4 and 16 client processes calling `len(d)` for a fixed time (calls/s);
  - create + drop: one client making and dropping `m.list()` proxies (objects/s);
  - queue: one process puts, another gets (items/s, the median of 3 rounds), with the
    server's CPU time and context switches per item (from its threads' schedstat and status,
    nanosecond counts: the phase is too short for /proc/<pid>/stat's ticks);
  - server CPU per call: the server process's user + system time from /proc/<pid>/stat over
    the throughput runs, divided by the calls made (microseconds per call), overall and for
    each client count (with its system part, and the context switches of its threads per
    call). On a 2-core machine the clients' own CPU caps the
    throughput figures; this one is what the server controls. Beside it, for each client
    count: the clients' own CPU per call (os.times() in each client) and the cores busy
    (clients + server CPU over the run's seconds; near 2.0 on 2 cores, the machine was the
    bound, not the server).

Standard library only. A table goes to stderr, the figures as JSON to stdout.
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from multiprocessing.managers import SyncManager

KEY = b"bench-key"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(pid):
    """User and system CPU time of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def own_cpu():
    """This process's user + system CPU time."""
    times = os.times()
    return times.user + times.system


def connect(port):
    mp.current_process().authkey = KEY
    m = SyncManager(address=("127.0.0.1", port), authkey=KEY)
    m.connect()
    return m


def caller(port, seconds, start, out, hold):
    """Calls len(d) from `start` for `seconds`; puts the number of calls and the CPU time the
    client spent making them, then keeps its connection (and so its server thread, whose
    context switches are counted) until told to go."""
    m = connect(port)
    d = m.dict(a=1)
    len(d)
    while time.time() < start:
        time.sleep(0.001)
    end = start + seconds
    calls = 0
    cpu = own_cpu()
    while time.time() < end:
        for _ in range(50):
            len(d)
        calls += 50
    out.put((calls, own_cpu() - cpu))
    hold.get()


def threads_cpu(pid):
    """CPU time (seconds, from the scheduler's nanosecond count) and context switches of the
    live threads of a process, from /proc/<pid>/task/*/{schedstat,status}."""
    cpu, switches = 0.0, 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                cpu += int(f.read().split()[0]) / 1e9
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if "ctxt_switches:" in line:  # voluntary and not
                        switches += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass  # a thread that left meanwhile
    return cpu, switches


def getter(port, count, out, hold):
    """Gets `count` items, then keeps its connection (and so its server thread, whose CPU
    time is counted) until told to go."""
    m = connect(port)
    q = m.Queue()
    out.put(q)
    for _ in range(count):
        q.get()
    out.put("done")
    hold.get()


def measure(port, pid, quick):
    figures = {}
    m = connect(port)
    d = m.dict(a=1)
    rounds = []
    for _ in range(5 if quick else 15):
        n = 200 if quick else 1000
        began = time.perf_counter()
        for _ in range(n):
            len(d)
        rounds.append((time.perf_counter() - began) / n * 1e6)
    figures["round trip (us)"] = statistics.median(rounds)
    seconds = 1.0 if quick else 3.0
    cpu_calls = [0.0, 0]
    for clients in (1, 4, 16):
        out, hold = mp.Queue(), mp.Queue()
        start = time.time() + 1.0 + clients * 0.1
        procs = [
            mp.Process(target=caller, args=(port, seconds, start, out, hold))
            for _ in range(clients)
        ]
        for p in procs:
            p.start()
        while time.time() < start:
            time.sleep(0.001)
        user_before, sys_before = cpu_times(pid)
        switches_before = threads_cpu(pid)[1]
        reports = [out.get() for _ in procs]
        user_after, sys_after = cpu_times(pid)
        switches_after = threads_cpu(pid)[1]
        for p in procs:
            hold.put("go")
        for p in procs:
            p.join()
        calls = sum(n for n, _ in reports)
        client_cpu = sum(c for _, c in reports)
        server_user, server_sys = user_after - user_before, sys_after - sys_before
        per_call = lambda cpu: cpu / max(calls, 1) * 1e6
        figures["throughput, %d clients (calls/s)" % clients] = calls / seconds
        figures["  server CPU per call, %d clients (us)" % clients] = per_call(
            server_user + server_sys
        )
        figures["  server system CPU per call, %d clients (us)" % clients] = per_call(server_sys)
        figures["  clients' CPU per call, %d clients (us)" % clients] = per_call(client_cpu)
        figures["  server context switches per call, %d clients" % clients] = (
            switches_after - switches_before
        ) / max(calls, 1)
        # Clients and server together: with 2 cores, 2.0 means the machine was the bound.
        figures["  cores busy, %d clients" % clients] = (
            client_cpu + server_user + server_sys
        ) / seconds
        cpu_calls[0] += server_user + server_sys
        cpu_calls[1] += calls
    figures["server CPU per call (us)"] = cpu_calls[0] / max(cpu_calls[1], 1) * 1e6
    n = 100 if quick else 500
    began = time.perf_counter()
    for _ in range(n):
        made = m.list()
        del made
    figures["create + drop (objects/s)"] = n / (time.perf_counter() - began)
    n = 500 if quick else 3000
    rates, cpus, switches = [], [], []
    for _ in range(3):
        out, hold = mp.Queue(), mp.Queue()
        consumer = mp.Process(target=getter, args=(port, n, out, hold))
        consumer.start()
        q = out.get()
        q.put(-1)  # the putter's connection (and its server thread) made before the count
        cpu_before, switches_before = threads_cpu(pid)
        began = time.perf_counter()
        for i in range(n - 1):
            q.put(i)
        assert out.get() == "done"
        rates.append((n - 1) / (time.perf_counter() - began))
        cpu_after, switches_after = threads_cpu(pid)
        cpus.append((cpu_after - cpu_before) / (n - 1) * 1e6)
        switches.append((switches_after - switches_before) / (n - 1))
        hold.put("go")
        consumer.join()
    figures["queue put + get between processes (items/s)"] = statistics.median(rates)
    figures["  server CPU per queue item (us)"] = statistics.median(cpus)
    figures["  server context switches per queue item"] = statistics.median(switches)
    return figures


def cpython_server():
    code = (
        "import multiprocessing, sys\n"
        "from multiprocessing.managers import SyncManager\n"
        "multiprocessing.current_process().authkey = %r\n"
        "s = SyncManager(address=('127.0.0.1', 0), authkey=%r).get_server()\n"
        "print(s.address[1], flush=True)\n"
        "s.serve_forever()\n" % (KEY, KEY)
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def rust_server(binary):
    env = dict(os.environ, MANAGER_AUTHKEY=KEY.decode(), MANAGER_LOG="error")
    proc = subprocess.Popen(
        [binary, "serve", "--address", "127.0.0.1:0", "--python-address", "127.0.0.1:0"]
        + os.environ.get("MANAGER_SERVE_ARGS", "").split(),
        stdout=subprocess.PIPE, text=True, env=env,
    )
    port = None
    while port is None:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("manager serve exited")
        if line.startswith("serving CPython clients on "):
            port = int(line.rsplit(":", 1)[1])
    return proc, port


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manager", default="target/release/manager", help="the manager binary")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure each server this many times, alternating them (each figure is then the "
        "median of its rounds, and the ratios of each round are shown beside it)",
    )
    args = parser.parse_args()
    servers = (("CPython", cpython_server), ("ours", lambda: rust_server(args.manager)))
    rounds = {name: [] for name, _ in servers}
    for _ in range(max(args.rounds, 1)):
        for name, start in servers:
            proc, port = start()
            try:
                rounds[name].append(measure(port, proc.pid, args.quick))
            finally:
                proc.kill()
                proc.wait()
    results = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }
    width = max(len(k) for k in results["CPython"])
    each = " (each round)" if args.rounds > 1 else ""
    sys.stderr.write("%-*s %14s %14s %8s%s\n" % (width, "figure", "CPython", "ours", "ratio", each))
    for key in results["CPython"]:
        a, b = results["CPython"][key], results["ours"][key]
        line = "%-*s %14.1f %14.1f %7.2fx" % (width, key, a, b, b / a if a else 0)
        if args.rounds > 1:
            ratios = [o[key] / c[key] if c[key] else 0 for c, o in zip(rounds["CPython"], rounds["ours"])]
            line += "  " + " ".join("%.2fx" % r for r in ratios)
        sys.stderr.write(line + "\n")
    json.dump({"python": sys.version.split()[0], "results": results, "rounds": rounds}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
