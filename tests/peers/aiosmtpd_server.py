#!/usr/bin/python3
"""Upstream test peer for tests/aiosmtpd_tls_auth.rs: an aiosmtpd server.

With --cert/--key it offers STARTTLS and refuses every command but EHLO, NOOP,
STARTTLS and QUIT before TLS (require_starttls). With --user/--password it
requires AUTH (PLAIN or LOGIN, only over TLS) for one account.

It writes to --out:
  events.log       one line per event: the verb of every command line received
                   (never its arguments), TLS-OK after a STARTTLS handshake,
                   AUTH-OK/AUTH-FAIL <mechanism> <login> from the authenticator
                   (never the password);
  msgNNNN.eml      the message content exactly as received (dot-unstuffed);
  msgNNNN.json     its envelope: mail_from, rcpt_tos, mail_options, login, tls.
Files are written under a temporary name and renamed, so a reader never sees
half a message. Prints "READY" on stdout once it listens.

Run it with the Debian interpreter (/usr/bin/python3, package python3-aiosmtpd).
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Events:
    def __init__(self, path):
        self.path = path

    def add(self, line):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


class CommandVerbs(logging.Handler):
    """aiosmtpd logs every command line as '%r >> %r' on mail.log (AUTH data
    already masked); only the verb is kept, so no credential reaches the file."""

    def __init__(self, events):
        super().__init__(level=logging.INFO)
        self.events = events

    def emit(self, record):
        if record.msg != "%r >> %r" or len(record.args or ()) != 2:
            return
        line = record.args[1]
        if isinstance(line, bytes):
            line = line.decode("ascii", errors="replace")
        verb = str(line).split(" ", 1)[0].upper()
        self.events.add(verb)


def write_atomic(path, data):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class Saver:
    def __init__(self, out, events):
        self.out = out
        self.events = events
        self.count = 0

    def handle_STARTTLS(self, server, session, envelope):
        self.events.add("TLS-OK")
        return True

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.out, "msg%04d" % self.count)
        login = session.login_data
        if isinstance(login, bytes):
            login = login.decode("utf-8", errors="replace")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "mail_options": envelope.mail_options,
            "login": login,
            "tls": session.ssl is not None,
        }
        # The JSON last: its presence means the message is complete.
        write_atomic(base + ".eml", envelope.original_content)
        write_atomic(base + ".json", json.dumps(meta).encode())
        self.events.add("DATA-SAVED")
        return "250 2.0.0 Ok: saved as msg%04d" % self.count


def make_authenticator(user, password, events):
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        login = getattr(auth_data, "login", b"")
        if isinstance(login, bytes):
            login = login.decode("utf-8", errors="replace")
        events.add("AUTH-%s %s %s" % ("OK" if ok else "FAIL", mechanism, login))
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        # aiosmtpd 1.4: handled=False makes smtp_AUTH send the 535 itself;
        # the default (handled=True) would leave the client without a reply.
        return AuthResult(success=False, handled=False)

    return authenticator


async def serve(args):
    loop = asyncio.get_running_loop()
    os.makedirs(args.out, exist_ok=True)
    events = Events(os.path.join(args.out, "events.log"))
    logger = logging.getLogger("mail.log")
    logger.setLevel(logging.INFO)
    logger.addHandler(CommandVerbs(events))
    logger.propagate = False

    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    authenticator = None
    if args.user is not None:
        authenticator = make_authenticator(args.user, args.password, events)
    handler = Saver(args.out, events)

    def factory():
        return SMTP(
            handler,
            hostname="peer.test",
            tls_context=tls,
            require_starttls=tls is not None,
            auth_required=authenticator is not None,
            auth_require_tls=True,
            authenticator=authenticator,
            loop=loop,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port)
    print("READY", flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
