"""Shared pieces of the benchmarks: the relays under test, the sinks, process
accounting from /proc, and the durability check. Standard library only, so a
fresh Debian machine needs nothing beyond postfix, strace and python3.

Every figure is taken the same way for both relays: CPU and RSS are summed over
the relay's whole process tree (for Postfix: master and every child, including
the CPU of children that exited, which the master reaps into its own cutime).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def die(msg):
    raise SystemExit(f"bench: {msg}")


class Report:
    """Prints each line as it comes and keeps them, so that a run cut short
    still leaves its tables in BENCH_MARKDOWN (written by save())."""

    def __init__(self):
        self.lines = []

    def __call__(self, line=""):
        print(line, flush=True)
        self.lines.append(line)

    def save(self):
        path = os.environ.get("BENCH_MARKDOWN")
        if path:
            with open(path, "w") as f:
                f.write("\n".join(self.lines) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    die(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def tool(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if not path:
        die(f"{name} missing: apt-get install postfix strace")
    return path


# --- /proc accounting ------------------------------------------------------------


def _stat(pid):
    """(ppid, utime+stime ticks, cutime+cstime ticks, rss bytes) or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: the fields start after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (
        int(fields[1]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
        int(fields[21]) * PAGE,
    )


def _tree(root):
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = _stat(int(entry))
            if s:
                stats[int(entry)] = s
    members, frontier = set(), [root]
    children = {}
    for pid, s in stats.items():
        children.setdefault(s[0], []).append(pid)
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in members:
            members.add(pid)
            frontier.extend(children.get(pid, []))
    return {pid: stats[pid] for pid in members}


def cpu_seconds(root):
    """CPU of the tree so far, counting children that already exited."""
    tree = _tree(root)
    ticks = sum(s[1] for s in tree.values())
    if root in tree:
        ticks += tree[root][2]
    return ticks / CLK_TCK


def rss_bytes(root):
    return sum(s[3] for s in _tree(root).values())


def _pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory(root):
    """(summed RSS, summed PSS) of the tree. RSS counts the pages that
    Postfix's many processes share (libc, the binaries) once per process; PSS
    splits each shared page among its users, so its sum is the tree's real
    footprint. For a single process the two differ only by shared libraries."""
    tree = _tree(root)
    return sum(s[3] for s in tree.values()), sum(_pss(p) for p in tree)


class Sampler:
    """Calls sample() on a thread every `every` seconds while in a `with`
    block, and once more at its end, so that a peak reached in the last
    moments still counts."""

    def __init__(self, every):
        self.every = every
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()


class PeakRss(Sampler):
    """The tree's peak summed RSS and PSS, sampled every 100 ms (often enough
    for a peak that lasts, seldom enough not to load the machine being
    measured). With kill_above (bytes of RSS) the root is killed once it
    passes that: a relay that holds every body in memory would otherwise take
    the whole machine down with it, and past such a size the exact figure
    tells nothing more."""

    def __init__(self, root, kill_above=None):
        super().__init__(0.1)
        self.root, self.peak, self.peak_pss = root, 0, 0
        self.kill_above, self.killed = kill_above, False

    def sample(self):
        rss, pss = memory(self.root)
        self.peak, self.peak_pss = max(self.peak, rss), max(self.peak_pss, pss)
        if self.kill_above and rss > self.kill_above and not self.killed:
            self.killed = True
            os.kill(self.root, signal.SIGKILL)


class PeakDisk(Sampler):
    """The peak size of a directory (see du), sampled every second: a
    100,000-file walk takes a good part of that."""

    def __init__(self, path):
        super().__init__(1.0)
        self.path, self.apparent, self.allocated = path, 0, 0

    def sample(self):
        apparent, allocated = du(self.path)
        self.apparent, self.allocated = max(self.apparent, apparent), max(self.allocated, allocated)


# --- smtp-sink -------------------------------------------------------------------


class Sink:
    """Postfix's smtp-sink, counting what arrives (its -c counter line)."""

    def __init__(self, workdir, name, port=None):
        self.port = port or free_port()
        self.out = os.path.join(workdir, f"sink-{name}.out")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [tool("smtp-sink"), "-u", "root", "-c", f"127.0.0.1:{self.port}", "1000"],
            # Truncated: a restarted sink counts from zero again.
            stdout=open(self.out, "wb"),
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def count(self):
        try:
            with open(self.out, "rb") as f:
                f.seek(max(0, os.path.getsize(self.out) - 256))
                tail = f.read()
        except OSError:
            return 0
        found = re.findall(rb"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0


def drained(relay, sink, target, timeout=600):
    """Waits until the sink has `target` messages and the relay's queue is empty."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sink.count() >= target and relay.queue_empty():
            return time.monotonic()
        time.sleep(0.005)
    die(f"{relay.name}: sink has {sink.count()} of {target} after {timeout}s")


def smtp_source(port, messages, sessions, size):
    subprocess.run(
        [
            tool("smtp-source"),
            "-s", str(sessions), "-l", str(size), "-m", str(messages),
            "-f", "bench@example.com", "-t", "sink@example.net",
            f"127.0.0.1:{port}",
        ],
        check=True,
    )


# --- the relays ------------------------------------------------------------------


class Postfix:
    """Debian's Postfix, configured as a smarthost relay on one port. main.cf
    and master.cf are backed up and restored on stop."""

    name = "postfix"

    def __init__(self, workdir, sink_port, message_size_limit=20480000):
        self.workdir = workdir
        self.port = free_port()
        self.backup = os.path.join(workdir, "postfix-etc")
        shutil.copytree("/etc/postfix", self.backup, symlinks=True)
        try:
            self._start(sink_port, message_size_limit)
        except BaseException:
            self.stop()  # a start that failed half way must not leave main.cf changed
            raise

    def _start(self, sink_port, message_size_limit):
        if not os.path.exists("/etc/postfix/main.cf"):
            open("/etc/postfix/main.cf", "w").close()
        subprocess.run([tool("postfix"), "stop"], capture_output=True)
        subprocess.run(
            [
                tool("postconf"), "-e",
                f"relayhost = [127.0.0.1]:{sink_port}",
                "inet_interfaces = loopback-only",
                "inet_protocols = ipv4",
                "mynetworks = 127.0.0.0/8",
                "smtpd_relay_restrictions = permit_mynetworks, reject",
                "mydestination =",
                "default_process_limit = 200",
                "smtp_tls_security_level = none",
                "maillog_file = /var/log/postfix-bench.log",
                "compatibility_level = 3.6",
                "myhostname = bench.test",
                "smtpd_banner = bench.test ESMTP",
                f"message_size_limit = {message_size_limit}",
                # qmgr will not run with a mailbox limit below the message limit.
                "mailbox_size_limit = 0",
            ],
            check=True,
        )
        subprocess.run(
            [tool("postconf"), "-M", f"{self.port}/inet={self.port} inet n - n - - smtpd"],
            check=True,
        )
        subprocess.run([tool("postfix"), "start"], check=True, capture_output=True)
        wait_port(self.port)

    def pid(self):
        with open("/var/spool/postfix/pid/master.pid") as f:
            return int(f.read().split()[0])

    def queue_empty(self):
        for d in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(f"/var/spool/postfix/{d}"):
                if files:
                    return False
        return True

    def stop(self):
        subprocess.run([tool("postfix"), "stop"], capture_output=True)
        for name in ("main.cf", "master.cf"):
            saved = os.path.join(self.backup, name)
            if os.path.exists(saved):
                shutil.copy2(saved, f"/etc/postfix/{name}")
            elif os.path.exists(f"/etc/postfix/{name}"):
                os.remove(f"/etc/postfix/{name}")


class Smarthost:
    """The release binary with one SMTP route to the sink."""

    name = "smarthost"

    def __init__(self, workdir, sink_port, binary, max_connections=20, extra="", top="",
                 max_message_size=20480000):
        self.workdir = os.path.join(workdir, "smarthost")
        os.makedirs(self.workdir, exist_ok=True)
        self.binary = binary
        self.port = free_port()
        self.metrics_port = free_port()
        self.queue = os.path.join(self.workdir, "queue")
        self.config = os.path.join(self.workdir, "smarthost.toml")
        with open(self.config, "w") as f:
            f.write(
                f"""hostname = "bench.test"
listen = ["127.0.0.1:{self.port}"]
queue_path = "{self.queue}"
{top}
[limits]
max_connections = 1000
max_message_size = {max_message_size}
[[route]]
name = "sink"
host = "127.0.0.1"
port = {sink_port}
tls = "none"
max_connections = {max_connections}
[routing]
default = "sink"
[local]
socket_dir = "{self.workdir}/run"
drop_dir = "{self.workdir}/drop"
[metrics]
listen = "127.0.0.1:{self.metrics_port}"
{extra}"""
            )
        self.proc = None
        self.start()

    def start(self, notify=None):
        env = dict(os.environ, RUST_LOG="warn")
        if notify:
            env["NOTIFY_SOCKET"] = notify
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config],
            stderr=open(os.path.join(self.workdir, "smarthost.log"), "ab"),
            env=env,
        )
        if not notify:
            wait_port(self.port)

    def pid(self):
        return self.proc.pid

    def metric(self, name):
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def queued(self):
        return int(self.metric("smarthost_queue_messages"))

    def queue_empty(self):
        return self.queued() == 0

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()


def build_release():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "--bin", "smarthost", "--example", "accept_latency"],
        cwd=ROOT,
        check=True,
    )
    # Cargo honours CARGO_TARGET_DIR: a build kept apart from a developer's own.
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return (
        os.path.join(target, "release/smarthost"),
        os.path.join(target, "release/examples/accept_latency"),
    )


def smarthost_binary():
    """SMARTHOST_BIN when set (to measure any build, say the one before a
    change against the one after), else the release build of this tree."""
    binary = os.environ.get("SMARTHOST_BIN")
    if not binary:
        return build_release()[0]
    if not os.access(binary, os.X_OK):
        die(f"SMARTHOST_BIN={binary} is not an executable")
    return os.path.abspath(binary)


def du(path):
    """(apparent, allocated) bytes of everything below path, as du counts
    them: directories included (an ext4 directory that once listed 100,000
    files keeps its blocks when they are gone), hard links once."""
    seen, apparent, allocated = set(), 0, 0
    for d, _, files in os.walk(path):
        for name in [""] + files:  # "": the directory itself
            try:
                st = os.lstat(os.path.join(d, name))
            except OSError:
                continue  # removed while we walked: the relay is busy
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                apparent += st.st_size
                allocated += st.st_blocks * 512
    return apparent, allocated


def disk_bytes(path):
    return du(path)[1]


# --- durability ------------------------------------------------------------------

SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs", "sync")


def durability(relay, messages=200):
    """Traces the relay's tree while `messages` go through and returns the
    count of each sync call. Real durability means fsync or fdatasync, not
    only sync_file_range (which flushes no metadata and no disk cache)."""
    pids = list(_tree(relay.pid()))
    out = os.path.join(tempfile.gettempdir(), f"strace-{relay.name}-{os.getpid()}.txt")
    cmd = [tool("strace"), "-f", "-c", "-o", out, "-e", "trace=" + ",".join(SYNC_CALLS)]
    for p in pids:
        cmd += ["-p", str(p)]
    tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # strace attaches asynchronously
    smtp_source(relay.port, messages, 10, 2048)
    time.sleep(0.5)
    tracer.send_signal(signal.SIGINT)
    tracer.wait()
    counts = {c: 0 for c in SYNC_CALLS}
    with open(out) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if parts and parts[-1] in counts and len(parts) >= 5:
                counts[parts[-1]] = int(parts[3])
    os.remove(out)
    return counts
