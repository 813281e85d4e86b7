#!/usr/bin/env bash
# Big messages in one command (benches/big_messages.py): 20 sessions x 20 MB
# through smarthost and Postfix side by side, peak PSS of each (all of
# Postfix's processes summed), 3 alternating rounds; then 200 sessions x 25 MB
# into smarthost with every DATA under way at once, its peak RSS.
#
#   benches/big-messages.sh                 # full size (root: it reconfigures
#                                           # the local Postfix and restores it)
#   BIG_SIZE_MB=2 BIG_MESSAGES=20 BIG_SESSIONS=5 BIG_ROUNDS=1 \
#     BIG_BURST_SESSIONS=20 BIG_BURST_SIZE_MB=2 benches/big-messages.sh   # the CI smoke
#   BIG_PARTS=burst benches/big-messages.sh  # the burst alone, no root needed
#
# SMARTHOST_BIN=PATH measures that binary instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/needs.sh
needs smtp-source:postfix python3:python3
exec python3 benches/big_messages.py
