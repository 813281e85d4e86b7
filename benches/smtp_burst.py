"""Many SMTP sessions whose DATA transfers all run at the same time: every
session has its 354 before any body byte goes out, the bodies go out
interleaved, and no session sends its final dot before every body is out.

smtp-source cannot do this: it writes each body whole with blocking writes,
so its sessions take turns and a relay never has more than one body coming
in. This is the worst case a relay must survive (max_connections sessions
each sending max_message_size), and the only way to see whether its memory
depends on the bodies in flight.
"""

import asyncio
import time

CHUNK = 64 * 1024
SENDER, RECIPIENT = "bench@example.com", "sink@example.net"


def message(size):
    """About `size` bytes: a header section, then 80-octet lines (none starts
    with a dot, so nothing is dot-stuffed and `size` is what goes over the wire)."""
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: big message\r\n"
            "Message-ID: <burst@bench.test>\r\n\r\n").encode()
    line = b"X" * 78 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


async def _reply(reader):
    """The code of a reply, multi-line or not."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def _command(reader, writer, line, want):
    writer.write(line.encode() + b"\r\n")
    got = await _reply(reader)
    if got != want:
        raise ConnectionError(f"{line.split()[0]}: {got}")


async def _session(port, body, opened, sent):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if await _reply(reader) != 220:
            raise ConnectionError("no 220 greeting")
        await _command(reader, writer, "EHLO bench.test", 250)
        await _command(reader, writer, f"MAIL FROM:<{SENDER}> SIZE={len(body)}", 250)
        await _command(reader, writer, f"RCPT TO:<{RECIPIENT}>", 250)
        await _command(reader, writer, "DATA", 354)
        await opened.wait()
        view = memoryview(body)
        for at in range(0, len(view), CHUNK):
            writer.write(view[at : at + CHUNK])
            await writer.drain()  # yields to the other sessions: they interleave
        await sent.wait()
        writer.write(b".\r\n")
        code = await _reply(reader)
        writer.write(b"QUIT\r\n")
        return code
    finally:
        writer.close()


async def _all(port, sessions, body):
    # A session that fails breaks both barriers, so the others never wait for it.
    opened, sent = asyncio.Barrier(sessions), asyncio.Barrier(sessions)

    async def one():
        try:
            return await _session(port, body, opened, sent)
        except BaseException:
            await opened.abort()
            await sent.abort()
            raise

    return await asyncio.gather(*(one() for _ in range(sessions)), return_exceptions=True)


def run(port, sessions, size, timeout):
    """Sends one message of `size` bytes over each of `sessions` sessions at
    once. Returns (accepted, seconds, the distinct reasons of the others)."""
    body = message(size)
    start = time.monotonic()
    try:
        results = asyncio.run(asyncio.wait_for(_all(port, sessions, body), timeout))
    except TimeoutError:
        return 0, time.monotonic() - start, [f"not done after {timeout} s"]
    seconds = time.monotonic() - start
    accepted = sum(1 for r in results if r == 250)
    # A broken barrier only says that another session failed first.
    reasons = {
        repr(r) for r in results
        if r != 250 and not isinstance(r, asyncio.BrokenBarrierError)
    }
    return accepted, seconds, sorted(reasons)
