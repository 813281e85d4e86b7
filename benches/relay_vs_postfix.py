#!/usr/bin/env python3
"""Postfix and smarthost side by side, both relaying smtp-source's load to
smtp-sink on this machine, alternating A B A B for every cell of the grid.

    benches/relay-vs-postfix.sh                     # the full grid, 3 rounds
    BENCH_MESSAGES=300 BENCH_ROUNDS=1 BENCH_SIZES=2048 BENCH_SESSIONS=20 \\
        benches/relay-vs-postfix.sh                 # the CI smoke

Environment: BENCH_MESSAGES (per run, default 2000), BENCH_ROUNDS (3),
BENCH_SIZES (bytes, "2048 20480 102400"), BENCH_SESSIONS ("1 20 100"),
BENCH_LATENCY_MESSAGES (1000), BENCH_MARKDOWN (also write the tables there).

Needs root: it reconfigures the local Postfix as a relay on a loopback port and
restores /etc/postfix afterwards. Run it on a machine with nothing else busy.
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402


def env_list(name, default):
    return [int(x) for x in os.environ.get(name, default).split()]


MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIZES = env_list("BENCH_SIZES", "2048 20480 102400")
SESSIONS = env_list("BENCH_SESSIONS", "1 20 100")
LATENCY_MESSAGES = int(os.environ.get("BENCH_LATENCY_MESSAGES", "1000"))


def run_cell(relay, sink, size, sessions):
    before = sink.count()
    cpu0 = b.cpu_seconds(relay.pid())
    with b.PeakRss(relay.pid()) as rss:
        start = time.monotonic()
        b.smtp_source(relay.port, MESSAGES, sessions, size)
        accepted = time.monotonic()
        done = b.drained(relay, sink, before + MESSAGES)
    cpu = b.cpu_seconds(relay.pid()) - cpu0
    return {
        "accept": MESSAGES / (accepted - start),
        "e2e_seconds": done - start,
        "accept_seconds": accepted - start,
        "cpu": cpu / MESSAGES * 1000,
        "rss": rss.peak,
        "pss": rss.peak_pss,
    }


def latency(relay, sink, client, sessions):
    before = sink.count()
    out = subprocess.run(
        [client, f"127.0.0.1:{relay.port}", str(sessions), str(LATENCY_MESSAGES), "2048"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fields = dict(kv.split("=") for kv in out.split())
    b.drained(relay, sink, before + LATENCY_MESSAGES)
    return float(fields["p50_ms"]), float(fields["p99_ms"])


def main():
    if os.geteuid() != 0:
        b.die("needs root to reconfigure the local Postfix")
    # The latency client always comes from this tree; the relay may be any
    # build (SMARTHOST_BIN), to set one change against the one before.
    _, client = b.build_release()
    binary = b.smarthost_binary()
    work = tempfile.mkdtemp(prefix="smarthost-bench-")
    sinks = {"postfix": b.Sink(work, "postfix"), "smarthost": b.Sink(work, "smarthost")}
    relays = []
    say = b.Report()

    try:
        relays.append(b.Postfix(work, sinks["postfix"].port))
        relays.append(b.Smarthost(work, sinks["smarthost"].port, binary))

        say("## Durability (strace -c over 200 messages, 10 sessions)")
        say()
        say("| relay | fsync | fdatasync | sync_file_range | verdict |")
        say("|---|---:|---:|---:|---|")
        for relay in relays:
            before = sinks[relay.name].count()
            c = b.durability(relay)
            b.drained(relay, sinks[relay.name], before + 200)
            real = c["fsync"] + c["fdatasync"]
            verdict = "durable" if real > 0 else "NOT DURABLE"
            say(f"| {relay.name} | {c['fsync']} | {c['fdatasync']} | {c['sync_file_range']} | {verdict} |")
            if real == 0:
                b.die(f"{relay.name} made no fsync/fdatasync call: not comparable")
        say()

        say(f"## Throughput: {MESSAGES} messages per run, {ROUNDS} rounds, A B A B")
        say()
        say("| size | sessions | relay | accepted msg/s | end-to-end msg/s | CPU s/1000 msgs "
            "| peak RSS MiB | peak PSS MiB |")
        say("|---:|---:|---|---:|---:|---:|---:|---:|")
        ratios = []
        grid_peak = {"postfix": 0, "smarthost": 0}
        grid_pss = {"postfix": 0, "smarthost": 0}
        for size in SIZES:
            for sessions in SESSIONS:
                runs = {"postfix": [], "smarthost": []}
                for _ in range(ROUNDS):
                    for relay in relays:
                        runs[relay.name].append(run_cell(relay, sinks[relay.name], size, sessions))
                e2e = {}
                for name, rs in runs.items():
                    n = MESSAGES * len(rs)
                    acc = n / sum(r["accept_seconds"] for r in rs)
                    e2e[name] = n / sum(r["e2e_seconds"] for r in rs)
                    cpu = statistics.median(r["cpu"] for r in rs)
                    peak = max(r["rss"] for r in rs)
                    pss = max(r["pss"] for r in rs)
                    grid_peak[name] = max(grid_peak[name], peak)
                    grid_pss[name] = max(grid_pss[name], pss)
                    say(
                        f"| {size // 1024} KB | {sessions} | {name} | {acc:.0f} | {e2e[name]:.0f} "
                        f"| {cpu:.2f} | {peak / 2**20:.1f} | {pss / 2**20:.1f} |"
                    )
                ratio = e2e["smarthost"] / e2e["postfix"]
                ratios.append((size, sessions, ratio))
                say(f"| {size // 1024} KB | {sessions} | **ratio** | | **{ratio:.2f}x** | | | |")
        say()
        say("End-to-end ratio smarthost/Postfix per cell: "
            + ", ".join(f"{s // 1024} KB x {n}: {r:.2f}x" for s, n, r in ratios))
        say("Peak memory over the grid (summed RSS / summed PSS of the process tree): "
            + ", ".join(f"{n} {grid_peak[n] / 2**20:.1f} / {grid_pss[n] / 2**20:.1f} MiB"
                        for n in ("postfix", "smarthost")))
        say()

        say(f"## Accept latency (end of DATA to 250), 2 KB, {LATENCY_MESSAGES} messages per run")
        say()
        say("| sessions | relay | p50 ms | p99 ms |")
        say("|---:|---|---:|---:|")
        for sessions in (1, 20):
            got = {"postfix": [], "smarthost": []}
            for _ in range(ROUNDS):
                for relay in relays:
                    got[relay.name].append(latency(relay, sinks[relay.name], client, sessions))
            for name, rs in got.items():
                p50 = statistics.median(r[0] for r in rs)
                p99 = statistics.median(r[1] for r in rs)
                say(f"| {sessions} | {name} | {p50:.2f} | {p99:.2f} |")
        say()
        say("(median over the rounds of each run's percentile)")
    finally:
        for relay in relays:
            relay.stop()
        for sink in sinks.values():
            sink.stop()
        say.save()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
