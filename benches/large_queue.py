#!/usr/bin/env python3
"""smarthost with a large queue: the upstream down while 100,000 messages are
injected, a restart with all of them queued (time to READY=1, memory, how
soon `queue list` shows its first line and its first 100 messages), the drain
once the upstream returns, the queue directory watched until it gives its
disk space back, then 1,000,000 messages churned through to see what the
disk holds afterwards.

A million queued (the goals of "A million queued": peak RSS at most 128 MiB
with 1,000,000 queued, READY=1 within 2 s of a restart, mailq's summary
within 1 s, the drain at least as fast per message as 100,000's):

    QUEUE_MESSAGES=1000000 QUEUE_CHURN=0 benches/large-queue.sh

    benches/large-queue.sh                                     # 100,000 + 1,000,000
    QUEUE_CHURN=0 benches/large-queue.sh                       # without the churn
    QUEUE_MESSAGES=3000 QUEUE_CHURN=6000 QUEUE_WATCH=20 benches/large-queue.sh   # the CI smoke

Environment: QUEUE_MESSAGES (default 100000, injected in 10 steps),
QUEUE_CHURN (1000000; 0 leaves the churn out), QUEUE_SESSIONS (20),
QUEUE_SIZE (bytes, 2048), QUEUE_WATCH (seconds to watch the queue directory
after the drain, 360), SMARTHOST_BIN (the binary to measure, else the release
build of this tree), BENCH_MARKDOWN (also write the tables there). Needs no root.

Disk comes back (the goal): after the drain, the queue directory (du of all
of it, apparent and allocated) falls under 20% of its peak within 5 minutes.
It is sampled every 10 s until both sizes are under 20% or QUEUE_WATCH ends.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

MESSAGES = int(os.environ.get("QUEUE_MESSAGES", "100000"))
CHURN = int(os.environ.get("QUEUE_CHURN", "1000000"))
SESSIONS = int(os.environ.get("QUEUE_SESSIONS", "20"))
SIZE = int(os.environ.get("QUEUE_SIZE", "2048"))
WATCH = float(os.environ.get("QUEUE_WATCH", "360"))
WATCH_EVERY, DISK_GOAL_SHARE, DISK_GOAL_SECONDS = 10, 0.2, 300
MiB = 2**20


def wait_for(what, check, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return time.monotonic()
        time.sleep(0.01)
    b.die(f"gave up waiting for {what} after {timeout}s")


def start_notified(relay, workdir):
    """Starts the relay with NOTIFY_SOCKET and returns seconds until READY=1."""
    path = os.path.join(workdir, "notify.sock")
    if os.path.exists(path):
        os.remove(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    try:
        start = time.monotonic()
        relay.start(notify=path)
        while True:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                return time.monotonic() - start
    finally:
        sock.close()


def peak_of(x, y):
    """The larger of two (apparent, allocated) sizes, each on its own."""
    return max(x[0], y[0]), max(x[1], y[1])


def inject(relay, say):
    """Queues MESSAGES with the upstream down; returns (peak RSS, peak du)."""
    step = max(1, MESSAGES // 10)
    say(f"## {MESSAGES} messages injected with the upstream down ({SIZE} B, {SESSIONS} sessions)")
    say()
    say("| queued | accepted msg/s (this step) | RSS MiB | disk MiB |")
    say("|---:|---:|---:|---:|")
    injected, peak_rss, peak_disk = 0, 0, (0, 0)
    while injected < MESSAGES:
        n = min(step, MESSAGES - injected)
        with b.PeakRss(relay.pid()) as rss:
            t = time.monotonic()
            b.smtp_source(relay.port, n, SESSIONS, SIZE)
            rate = n / (time.monotonic() - t)
        injected += n
        peak_rss = max(peak_rss, rss.peak)
        # Sampled between steps, not during them: a walk of a large queue
        # directory would take CPU from the relay whose accept rate is measured.
        disk = b.du(relay.queue)
        peak_disk = peak_of(peak_disk, disk)
        say(f"| {injected} | {rate:.0f} | {b.rss_bytes(relay.pid()) / MiB:.1f} | {disk[1] / MiB:.1f} |")
    wait_for("every message queued", lambda: relay.queued() >= MESSAGES, 120)
    return peak_rss, peak_of(peak_disk, b.du(relay.queue))


def restart(relay, work, say):
    relay.stop()
    ready = start_notified(relay, work)
    wait_for("queue count after restart", lambda: relay.queued() >= MESSAGES, 60)
    say(f"Restart to READY=1 with {relay.queued()} queued: {ready:.3f} s; "
        f"RSS after the restart {b.rss_bytes(relay.pid()) / MiB:.1f} MiB")
    say()


def first_line_after(cmd):
    """Runs `cmd`; seconds until its first line of output, and until it
    ends (None, None if it fails: a binary from before `--limit`)."""
    t = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    first = time.monotonic() - t
    for _ in proc.stdout:
        pass
    if proc.wait() != 0:
        return None, None
    return first, time.monotonic() - t


def secs(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f} s"


def mailq(relay, binary, say):
    """How soon an operator sees the queue: the summary line, the first 100."""
    listing = [binary, "queue", "--config", relay.config, "list"]
    with b.PeakRss(relay.pid()) as rss:
        summary, whole = first_line_after(listing)
        _, hundred = first_line_after(listing + ["--limit", "100"])
    say(f"`queue list` with {relay.queued()} queued: first line after {secs(summary, 3)}, "
        f"the whole listing {secs(whole, 1)}; `--limit 100` {secs(hundred, 3)}; "
        f"relay's peak RSS meanwhile {rss.peak / MiB:.1f} MiB")
    say()


def drain(relay, binary, sink, say):
    """Flushes the queue into the sink; returns the peak du while draining."""
    with b.PeakRss(relay.pid()) as rss, b.PeakDisk(relay.queue) as disk:
        t = time.monotonic()
        subprocess.run(
            [binary, "queue", "--config", relay.config, "flush", "--all"],
            check=True, capture_output=True,
        )
        done = wait_for(
            "the drain",
            lambda: sink.count() >= MESSAGES and relay.queue_empty(),
            max(600, MESSAGES / 20),
        )
    took = done - t
    say(f"Drain of {MESSAGES} once the upstream is back: {took:.1f} s "
        f"({MESSAGES / took:.0f} msg/s); peak RSS {rss.peak / MiB:.1f} MiB; "
        f"disk afterwards {b.disk_bytes(relay.queue) / MiB:.1f} MiB")
    say()
    return disk.apparent, disk.allocated


def watch_disk(relay, peak, say):
    """Samples the queue directory every WATCH_EVERY s from the end of the
    drain; returns when each size first fell under its goal share of the peak
    ({"apparent": seconds or None, "allocated": ...})."""
    say(f"## Disk comes back: the queue directory after the drain (peak: "
        f"{peak[0] / MiB:.1f} MiB apparent, {peak[1] / MiB:.1f} MiB allocated)")
    say()
    say("| s after the drain | apparent MiB | allocated MiB | allocated, % of peak |")
    say("|---:|---:|---:|---:|")
    fell = {"apparent": None, "allocated": None}
    start = time.monotonic()
    for due in range(0, int(WATCH) + 1, WATCH_EVERY):
        time.sleep(max(0.0, start + due - time.monotonic()))
        size = b.du(relay.queue)
        say(f"| {due} | {size[0] / MiB:.1f} | {size[1] / MiB:.1f} | {100 * size[1] / peak[1]:.0f}% |")
        for i, kind in enumerate(fell):
            if fell[kind] is None and size[i] < DISK_GOAL_SHARE * peak[i]:
                fell[kind] = due
        if None not in fell.values():
            break
    say()
    return fell


def report_watch(fell, say):
    share, goal = f"{DISK_GOAL_SHARE:.0%} of the peak", f"goal: within {DISK_GOAL_SECONDS} s"
    for kind, due in fell.items():
        if due is not None:
            verdict = "met" if due <= DISK_GOAL_SECONDS else "**missed**"
            say(f"Disk comes back ({kind}): under {share} after {due} s ({goal}): {verdict}")
        else:
            # A watch shorter than the goal (the smoke's) cannot tell.
            verdict = "**missed**" if WATCH >= DISK_GOAL_SECONDS else "not known"
            say(f"Disk comes back ({kind}): still over {share} after {WATCH:.0f} s ({goal}): {verdict}")
    say()


def churn(relay, sink, live_disk, say):
    say(f"## Churn: {CHURN} messages through with the upstream up")
    say()
    base = sink.count()
    max_disk = 0
    t = time.monotonic()
    source = subprocess.Popen([
        b.tool("smtp-source"), "-s", str(SESSIONS), "-l", str(SIZE), "-m", str(CHURN),
        "-f", "bench@example.com", "-t", "sink@example.net", f"127.0.0.1:{relay.port}",
    ])
    with b.PeakRss(relay.pid()) as rss:
        while source.poll() is None or sink.count() < base + CHURN or not relay.queue_empty():
            max_disk = max(max_disk, b.disk_bytes(relay.queue))
            time.sleep(1)
    if source.returncode != 0:
        b.die(f"smtp-source failed: {source.returncode}")
    took = time.monotonic() - t
    after = b.disk_bytes(relay.queue)
    say(f"{CHURN} messages in {took:.0f} s ({CHURN / took:.0f} msg/s end to end); "
        f"peak RSS {rss.peak / MiB:.1f} MiB")
    # The largest live queue of the run is the one with every injected
    # message in it; the churn itself never holds more than a few hundred.
    say(f"Disk: with the largest live queue ({MESSAGES} messages) {live_disk / MiB:.1f} MiB; "
        f"during the churn at most {max_disk / MiB:.1f} MiB; afterwards {after / MiB:.1f} MiB "
        f"({after / live_disk:.2f}x the largest live queue)")


def main():
    binary = b.smarthost_binary()
    work = tempfile.mkdtemp(prefix="smarthost-queue-")
    say = b.Report()

    sink_port = b.free_port()
    relay = b.Smarthost(work, sink_port, binary)
    sink = None
    try:
        peak_rss, peak_disk = inject(relay, say)
        live_disk = b.disk_bytes(relay.queue)
        say()
        say(f"Peak RSS while injecting: {peak_rss / MiB:.1f} MiB; disk with {MESSAGES} queued: "
            f"{live_disk / MiB:.1f} MiB")
        restart(relay, work, say)
        mailq(relay, binary, say)
        peak_disk = peak_of(peak_disk, b.du(relay.queue))
        sink = b.Sink(work, "queue", port=sink_port)
        peak_disk = peak_of(peak_disk, drain(relay, binary, sink, say))
        report_watch(watch_disk(relay, peak_disk, say), say)
        if CHURN > 0:
            churn(relay, sink, live_disk, say)
    finally:
        relay.stop(signal.SIGTERM)
        if sink:
            sink.stop()
        say.save()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
