"""Submission under load (issue "Submission"), release build, smtp-sink upstream:

1. 20 sessions, each STARTTLS + AUTH PLAIN (an ARGON2ID hash as `doveadm pw`
   makes it) then messages of 2 KB, against the same sessions on the
   unauthenticated loopback listener in the same run: accepted msg/s of each.
2. A normal client's latency (one 2 KB message a session, one after another,
   on the loopback listener, and one logged-in session on the submission port)
   alone, then while 50 clients flood wrong passwords: p50 and p99.

Knobs: SUB_SESSIONS (20), SUB_MESSAGES per session (25), SUB_FLOOD (50),
SUB_SECONDS of flood (10), SUB_PROBES (40).
"""

import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as b  # noqa: E402

SESSIONS = int(os.environ.get("SUB_SESSIONS", "20"))
MESSAGES = int(os.environ.get("SUB_MESSAGES", "25"))
FLOOD = int(os.environ.get("SUB_FLOOD", "50"))
SECONDS = float(os.environ.get("SUB_SECONDS", "10"))
PROBES = int(os.environ.get("SUB_PROBES", "40"))
PASSWORD = "bench-Argon-pw-4471"
BODY = "Subject: bench\r\n\r\n" + ("x" * 76 + "\r\n") * 26


def setup(work):
    """Certificate, key and passwd-file; the config lines for them."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-subj", "/CN=localhost", "-days", "2"],
        check=True, capture_output=True)
    hashed = subprocess.run(
        ["doveadm", "-o", "stats_writer_socket_path=", "pw", "-s", "ARGON2ID", "-p", PASSWORD],
        check=True, capture_output=True, text=True).stdout.strip()
    passwd = os.path.join(work, "passwd")
    with open(passwd, "w") as f:
        f.write(f"bench:{hashed}\n")
    port = b.free_port()
    top = (f'[[submission]]\nlisten = ["127.0.0.1:{port}"]\ntls = "starttls"\n'
           f'cert = "{cert}"\nkey = "{key}"\n[auth]\npasswd_file = "{passwd}"\n'
           f'[auth.senders]\nbench = ["*"]\n')
    return port, top


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def session(port, login, messages):
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    if login:
        s.starttls(context=tls_context())
        s.login("bench", PASSWORD)
    for _ in range(messages):
        s.sendmail("bench@example.com", ["sink@example.net"], BODY)
    s.quit()


def rate(port, login):
    threads = [threading.Thread(target=session, args=(port, login, MESSAGES)) for _ in range(SESSIONS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return SESSIONS * MESSAGES / (time.monotonic() - start)


def flood(port, stop, counts):
    while not stop.is_set():
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=60)
            s.starttls(context=tls_context())
            try:
                s.login("bench", "wrong-password")
            except smtplib.SMTPException:
                counts.append(1)
            s.close()
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


def latencies(plain_port, sub_port):
    plain, logged = [], []
    for _ in range(PROBES):
        t = time.monotonic()
        session(plain_port, False, 1)
        plain.append(time.monotonic() - t)
        t = time.monotonic()
        session(sub_port, True, 1)
        logged.append(time.monotonic() - t)
    return plain, logged


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main():
    say = b.Report()
    binary = b.smarthost_binary()
    with tempfile.TemporaryDirectory(prefix="bench-submission-") as work:
        sink = b.Sink(work, "sink")
        sub_port, top = setup(work)
        relay = b.Smarthost(work, sink.port, binary, top=top)
        try:
            run(relay, sub_port, say)
        finally:
            relay.stop()
            sink.stop()
    say.save()


def run(relay, sub_port, say):
    plain_rate = rate(relay.port, False)
    auth_rate = rate(sub_port, True)
    say(f"## Submission: {SESSIONS} sessions x {MESSAGES} messages of 2 KB")
    say()
    say("| path | msg/s | ratio |")
    say("|---|---:|---:|")
    say(f"| loopback, no login | {plain_rate:.0f} | 1.00 |")
    say(f"| STARTTLS + AUTH PLAIN (ARGON2ID) | {auth_rate:.0f} | {auth_rate / plain_rate:.2f} |")
    say()
    quiet = latencies(relay.port, sub_port)
    stop, counts = threading.Event(), []
    flooders = [threading.Thread(target=flood, args=(sub_port, stop, counts)) for _ in range(FLOOD)]
    for t in flooders:
        t.start()
    time.sleep(min(2.0, SECONDS / 2))
    loaded = latencies(relay.port, sub_port)
    stop.set()
    for t in flooders:
        t.join()
    say(f"## A normal client's latency, alone and while {FLOOD} clients flood wrong passwords "
        f"({len(counts)} refused)")
    say()
    say("| client | alone p50 ms | alone p99 ms | flood p50 ms | flood p99 ms |")
    say("|---|---:|---:|---:|---:|")
    for name, q, l in [("loopback, no login", quiet[0], loaded[0]),
                       ("submission, logged in", quiet[1], loaded[1])]:
        say(f"| {name} | {pct(q, .5):.1f} | {pct(q, .99):.1f} | {pct(l, .5):.1f} | {pct(l, .99):.1f} |")
    say()


if __name__ == "__main__":
    main()
