#!/usr/bin/env python3
"""Big messages: what a relay's memory does when the bodies are large.

1. Side by side: 20 sessions x 20 MB (`smtp-source -s 20 -m 100 -l 20000000`)
   through smarthost, then through Postfix, alternating for every round, each
   relaying into its own smtp-sink. PSS is sampled every 100 ms until the sink
   has every message and the queue is empty: smarthost's process, and the sum
   over all of Postfix's (master, smtpd, cleanup, qmgr, smtp, ...). Goal:
   smarthost's peak at most Postfix's (the median of the per-round ratios).
2. Burst: 200 sessions x 25 MB into smarthost with every DATA transfer under
   way at once (benches/smtp_burst.py), the upstream down so that only taking
   the bodies in is measured. Goal: peak RSS under 128 MiB.

    benches/big-messages.sh             # both, full size, 3 rounds
    BIG_SIZE_MB=2 BIG_MESSAGES=20 BIG_SESSIONS=5 BIG_ROUNDS=1 \\
        BIG_BURST_SESSIONS=20 BIG_BURST_SIZE_MB=2 benches/big-messages.sh   # the CI smoke

Environment: BIG_SIZE_MB (20), BIG_MESSAGES (100), BIG_SESSIONS (20),
BIG_ROUNDS (3), BIG_BURST_SESSIONS (200), BIG_BURST_SIZE_MB (25),
BIG_RSS_STOP_MB (4096: the burst's relay is killed past that, so that a relay
holding every body does not take the machine down), BIG_PARTS ("side burst";
"side" needs root, it reconfigures the local Postfix and restores /etc/postfix),
SMARTHOST_BIN (the binary to measure, else the release build of this tree),
BENCH_MARKDOWN (also write the tables there).

Goals are reported, not enforced: the exit status is non-zero only when the
benchmark could not run.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402
import smtp_burst  # noqa: E402

MB, MiB = 1_000_000, 2**20
SIZE = int(float(os.environ.get("BIG_SIZE_MB", "20")) * MB)
MESSAGES = int(os.environ.get("BIG_MESSAGES", "100"))
SESSIONS = int(os.environ.get("BIG_SESSIONS", "20"))
ROUNDS = int(os.environ.get("BIG_ROUNDS", "3"))
BURST_SESSIONS = int(os.environ.get("BIG_BURST_SESSIONS", "200"))
BURST_SIZE = int(float(os.environ.get("BIG_BURST_SIZE_MB", "25")) * MB)
RSS_STOP = int(os.environ.get("BIG_RSS_STOP_MB", "4096")) * MiB
PARTS = os.environ.get("BIG_PARTS", "side burst").split()
PSS_GOAL, RSS_GOAL = 1.0, 128 * MiB


def size_limit(size):
    # The relays add a Received header and the like: a margin keeps the
    # benchmark's messages under the limit whatever the size asked for.
    return size + MiB


def patience(total_bytes):
    """Seconds to wait for a run: generous (2 MB/s), so that only a relay that
    is stuck fails the benchmark, not a slow one."""
    return max(600, total_bytes / (2 * MB))


def side_run(relay, sink):
    """One run of smtp-source through the relay: (peak PSS, seconds to drained)."""
    before = sink.count()
    with b.PeakRss(relay.pid()) as mem:
        start = time.monotonic()
        b.smtp_source(relay.port, MESSAGES, SESSIONS, SIZE)
        done = b.drained(relay, sink, before + MESSAGES, patience(MESSAGES * SIZE))
    return mem.peak_pss, done - start


def side_by_side(work, binary, say):
    """Runs the rounds and returns (median smarthost PSS, median Postfix PSS,
    median ratio)."""
    sinks = {name: b.Sink(work, name) for name in ("smarthost", "postfix")}
    relays = []
    try:
        relays.append(b.Smarthost(work, sinks["smarthost"].port, binary,
                                  max_message_size=size_limit(SIZE)))
        relays.append(b.Postfix(work, sinks["postfix"].port,
                                message_size_limit=size_limit(SIZE)))
        runs = {relay.name: [] for relay in relays}
        for _ in range(ROUNDS):
            for relay in relays:  # smarthost then Postfix, every round
                runs[relay.name].append(side_run(relay, sinks[relay.name]))
    finally:
        for relay in relays:
            relay.stop()
        for sink in sinks.values():
            sink.stop()
    return report_side(runs["smarthost"], runs["postfix"], say)


def report_side(ours, theirs, say):
    say(f"## Side by side: {MESSAGES} x {SIZE / MB:g} MB over {SESSIONS} sessions "
        f"into smtp-sink, {ROUNDS} rounds (smarthost then Postfix)")
    say()
    say("| round | smarthost peak PSS MiB | Postfix peak PSS MiB (all processes) "
        "| ratio | smarthost s | Postfix s |")
    say("|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for i, ((pss, secs), (p_pss, p_secs)) in enumerate(zip(ours, theirs), 1):
        ratios.append(pss / p_pss)
        say(f"| {i} | {pss / MiB:.1f} | {p_pss / MiB:.1f} | {ratios[-1]:.2f} "
            f"| {secs:.1f} | {p_secs:.1f} |")
    medians = [statistics.median(r[0] for r in rs) for rs in (ours, theirs)]
    ratio = statistics.median(ratios)
    say(f"| **median** | **{medians[0] / MiB:.1f}** | **{medians[1] / MiB:.1f}** "
        f"| **{ratio:.2f}** | | |")
    say()
    return medians[0], medians[1], ratio


def burst(work, binary, say):
    """Returns the peak RSS (None when the relay had to be killed at the cap)."""
    # Nothing listens on the route's port: every delivery fails at connect and
    # waits for its retry, so the figure is that of taking the bodies in.
    relay = b.Smarthost(os.path.join(work, "burst"), b.free_port(), binary,
                        max_message_size=size_limit(BURST_SIZE))
    try:
        with b.PeakRss(relay.pid(), kill_above=RSS_STOP) as mem:
            accepted, secs, reasons = smtp_burst.run(
                relay.port, BURST_SESSIONS, BURST_SIZE, patience(BURST_SESSIONS * BURST_SIZE))
    finally:
        relay.stop()
    say(f"## Burst: {BURST_SESSIONS} sessions x {BURST_SIZE / MB:g} MB, every DATA under way "
        "at once, upstream down")
    say()
    say("| accepted | seconds | peak RSS MiB | peak PSS MiB |")
    say("|---:|---:|---:|---:|")
    peak = f"> {RSS_STOP / MiB:.0f} (killed there)" if mem.killed else f"{mem.peak / MiB:.1f}"
    say(f"| {accepted} of {BURST_SESSIONS} | {secs:.1f} | {peak} | {mem.peak_pss / MiB:.1f} |")
    say()
    for reason in reasons[:5]:
        say(f"Refused or failed: {reason}")
    if reasons:
        say()
    return None if mem.killed else mem.peak


def summary(side, burst_peak, say):
    def verdict(ok):
        return "met" if ok else "**missed**"

    say("## Summary")
    say()
    say("| measure | smarthost | Postfix | goal | |")
    say("|---|---:|---:|---|---|")
    if side:
        ours, theirs, ratio = side
        say(f"| peak PSS, {SESSIONS} x {SIZE / MB:g} MB (median of {ROUNDS}) | {ours / MiB:.1f} MiB "
            f"| {theirs / MiB:.1f} MiB | ratio {ratio:.2f} <= {PSS_GOAL:.1f} "
            f"| {verdict(ratio <= PSS_GOAL)} |")
    if "burst" in PARTS:
        shown = f"{burst_peak / MiB:.1f} MiB" if burst_peak else f"> {RSS_STOP / MiB:.0f} MiB"
        say(f"| peak RSS, {BURST_SESSIONS} x {BURST_SIZE / MB:g} MB at once | {shown} | | "
            f"< {RSS_GOAL / MiB:.0f} MiB | {verdict(bool(burst_peak) and burst_peak < RSS_GOAL)} |")


def main():
    if "side" in PARTS and os.geteuid() != 0:
        b.die("the side-by-side part needs root to reconfigure the local Postfix "
              "(BIG_PARTS=burst runs the rest)")
    binary = b.smarthost_binary()
    work = tempfile.mkdtemp(prefix="smarthost-big-")
    say = b.Report()
    side, burst_peak = None, None
    try:
        if "side" in PARTS:
            side = side_by_side(work, binary, say)
        if "burst" in PARTS:
            burst_peak = burst(work, binary, say)
        summary(side, burst_peak, say)
    finally:
        say.save()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
