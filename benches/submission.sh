#!/usr/bin/env bash
# Submission under load (benches/submission.py): 20 sessions logging in with
# ARGON2ID then sending 2 KB, msg/s against the unauthenticated loopback path
# in the same run; and a normal client's latency while 50 clients flood wrong
# passwords.
#
#   benches/submission.sh
#   SUB_SESSIONS=4 SUB_MESSAGES=5 SUB_FLOOD=5 SUB_SECONDS=2 SUB_PROBES=5 \
#     benches/submission.sh                      # the CI smoke
#
# SMARTHOST_BIN=PATH measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/needs.sh
needs smtp-sink:postfix doveadm:dovecot-core openssl:openssl python3:python3
exec python3 benches/submission.py
