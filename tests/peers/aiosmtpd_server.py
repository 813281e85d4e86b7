#!/usr/bin/python3
"""Upstream test peer for tests/aiosmtpd_tls_auth.rs: an aiosmtpd server.

With --cert/--key it offers STARTTLS and refuses every command but EHLO, NOOP,
STARTTLS and QUIT before TLS (require_starttls). With --user/--password it
requires AUTH (PLAIN or LOGIN, only over TLS) for one account.

With --xoauth2-user/--xoauth2-token-file it requires AUTH and also offers
XOAUTH2 (only over TLS; alone unless --user is given too): the initial response
user=<user>\\x01auth=Bearer <token>\\x01\\x01 is accepted if the user matches and
the token is one of the lines of the token file, read again on every AUTH. A
refused token gets Google's JSON error challenge (334 base64 of
{"status":"401",...}); the client must answer with an empty line, and then gets
535 5.7.8. AUTH lines may be up to 12288 octets (RFC 4954 4), for real
(several KB) tokens; other commands and message lines keep aiosmtpd's limits.

It writes to --out:
  events.log       one line per event: the verb of every command line received
                   (never its arguments), TLS-OK after a STARTTLS handshake,
                   AUTH-OK/AUTH-FAIL <mechanism> <login> from the authenticator
                   (never the password or token);
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
import base64
import binascii
import collections
import os
import ssl
import sys
import types

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

# RFC 4954 4: a client may send AUTH lines (with the initial response) of up to
# 12288 octets. aiosmtpd 1.4 reads every line with a StreamReader limited to
# line_length_limit (1001, a longer line is "500 Command line too long" before
# any AUTH code runs) and then checks command_size_limits[verb] (512).
AUTH_LINE_LIMIT = 12288

# Google's XOAUTH2 error challenge for a refused token.
XOAUTH2_ERROR = json.dumps(
    {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"},
    separators=(",", ":"),
)


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


class XOAuth2Saver(Saver):
    """Saver plus an XOAUTH2 mechanism (aiosmtpd 1.4 picks up auth_* methods of
    the handler; smtp_AUTH calls it as auth_XOAUTH2(server, args) with args =
    [mechanism, initial response?], only over TLS since auth_require_tls)."""

    def __init__(self, out, events, user, token_file):
        super().__init__(out, events)
        self.user = user
        self.token_file = token_file

    def valid_tokens(self):
        try:
            with open(self.token_file, encoding="utf-8") as f:
                return {line.strip() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    async def auth_XOAUTH2(self, server, args):
        if len(args) == 1:
            # No initial response: ask for it with an empty challenge.
            raw = await server.challenge_auth("")
            if raw is MISSING:
                # challenge_auth already replied (501).
                return AuthResult(success=False, handled=True)
        else:
            try:
                raw = base64.b64decode(args[1].encode(), validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        # user=<user>\x01auth=Bearer <token>\x01\x01
        fields = raw.split(b"\x01")
        user = token = None
        if len(fields) == 4 and fields[2:] == [b"", b""]:
            if fields[0].startswith(b"user=") and fields[1].startswith(b"auth=Bearer "):
                user = fields[0][len(b"user="):].decode("utf-8", errors="replace")
                token = fields[1][len(b"auth=Bearer "):].decode("utf-8", errors="replace")
        if user is None:
            await server.push("501 5.5.2 Malformed XOAUTH2 initial response")
            return AuthResult(success=False, handled=True)
        ok = user == self.user and token in self.valid_tokens()
        self.events.add("AUTH-%s XOAUTH2 %s" % ("OK" if ok else "FAIL", user))
        if ok:
            return AuthResult(
                success=True, auth_data=types.SimpleNamespace(login=user.encode())
            )
        # Refused: the JSON error challenge, to which the client must send an
        # empty line; only then the final reply.
        answer = await server.challenge_auth(XOAUTH2_ERROR)
        if answer is MISSING:
            # "*" or bad base64: challenge_auth already replied (501).
            return AuthResult(success=False, handled=True)
        if answer != b"":
            await server.push("501 5.5.2 Expected an empty response to the error challenge")
            return AuthResult(success=False, handled=True)
        # aiosmtpd 1.4: handled=False makes smtp_AUTH send this reply; with the
        # default (handled=True) the client would get no reply at all.
        return AuthResult(
            success=False,
            handled=False,
            message="535 5.7.8 Username and Password not accepted",
        )


class LongAuthSMTP(SMTP):
    """SMTP taking AUTH lines of up to AUTH_LINE_LIMIT octets."""

    # Read in SMTP.__init__ for the StreamReader's limit.
    line_length_limit = AUTH_LINE_LIMIT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Message lines keep RFC 5321's limit (smtp_DATA checks this one).
        self.line_length_limit = SMTP.line_length_limit
        # command_size_limits is a class-level dict in aiosmtpd (shared, and
        # cleared by every __init__): give this session its own.
        self.command_size_limits = collections.defaultdict(
            lambda: SMTP.command_size_limit
        )
        self.command_size_limits["AUTH"] = AUTH_LINE_LIMIT


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
    smtp_class = SMTP
    exclude = []
    if args.xoauth2_user is not None:
        handler = XOAuth2Saver(
            args.out, events, args.xoauth2_user, args.xoauth2_token_file
        )
        smtp_class = LongAuthSMTP
        if authenticator is None:
            # XOAUTH2 only: PLAIN/LOGIN would always fail anyway.
            exclude = ["PLAIN", "LOGIN"]
    else:
        handler = Saver(args.out, events)
    auth_required = authenticator is not None or args.xoauth2_user is not None

    def factory():
        return smtp_class(
            handler,
            hostname="peer.test",
            tls_context=tls,
            require_starttls=tls is not None,
            auth_required=auth_required,
            auth_require_tls=True,
            auth_exclude_mechanism=exclude,
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
    p.add_argument("--xoauth2-user")
    p.add_argument("--xoauth2-token-file")
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if (args.xoauth2_user is None) != (args.xoauth2_token_file is None):
        p.error("--xoauth2-user and --xoauth2-token-file go together")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
