#!/usr/bin/env python3
"""smarthost with a large queue: the upstream down while 100,000 messages are
injected, a restart with all of them queued, the drain once the upstream
returns, then 1,000,000 messages churned through to see that the queue gives
its disk space back.

    benches/large-queue.sh                                     # 100,000 + 1,000,000
    QUEUE_MESSAGES=3000 QUEUE_CHURN=6000 benches/large-queue.sh   # the CI smoke

Environment: QUEUE_MESSAGES (default 100000, injected in 10 steps),
QUEUE_CHURN (1000000), QUEUE_SESSIONS (20), QUEUE_SIZE (bytes, 2048),
BENCH_MARKDOWN (also write the tables there). Needs no root.
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


def main():
    binary, _ = b.build_release()
    work = tempfile.mkdtemp(prefix="smarthost-queue-")
    say = b.Report()

    sink_port = b.free_port()
    relay = b.Smarthost(work, sink_port, binary)
    sink = None
    try:
        step = max(1, MESSAGES // 10)
        say(f"## {MESSAGES} messages injected with the upstream down ({SIZE} B, {SESSIONS} sessions)")
        say()
        say("| queued | accepted msg/s (this step) | RSS MiB | disk MiB |")
        say("|---:|---:|---:|---:|")
        injected = 0
        peak_rss = 0
        while injected < MESSAGES:
            n = min(step, MESSAGES - injected)
            with b.PeakRss(relay.pid()) as rss:
                t = time.monotonic()
                b.smtp_source(relay.port, n, SESSIONS, SIZE)
                rate = n / (time.monotonic() - t)
            injected += n
            peak_rss = max(peak_rss, rss.peak)
            say(f"| {injected} | {rate:.0f} | {b.rss_bytes(relay.pid()) / MiB:.1f} "
                f"| {b.disk_bytes(relay.queue) / MiB:.1f} |")
        wait_for("every message queued", lambda: relay.queued() >= MESSAGES, 120)
        live_disk = b.disk_bytes(relay.queue)
        say()
        say(f"Peak RSS while injecting: {peak_rss / MiB:.1f} MiB; disk with {MESSAGES} queued: "
            f"{live_disk / MiB:.1f} MiB")

        relay.stop()
        ready = start_notified(relay, work)
        wait_for("queue count after restart", lambda: relay.queued() >= MESSAGES, 60)
        say(f"Restart to READY=1 with {relay.queued()} queued: {ready:.3f} s; "
            f"RSS after the restart {b.rss_bytes(relay.pid()) / MiB:.1f} MiB")

        sink = b.Sink(work, "queue", port=sink_port)
        with b.PeakRss(relay.pid()) as rss:
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
        drain = done - t
        say(f"Drain of {MESSAGES} once the upstream is back: {drain:.1f} s "
            f"({MESSAGES / drain:.0f} msg/s); peak RSS {rss.peak / MiB:.1f} MiB; "
            f"disk afterwards {b.disk_bytes(relay.queue) / MiB:.1f} MiB")
        say()

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
    finally:
        relay.stop(signal.SIGTERM)
        if sink:
            sink.stop()
        say.save()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
