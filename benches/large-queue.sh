#!/usr/bin/env bash
# smarthost with a large queue in one command: 100,000 messages injected with the
# upstream down, restart-to-ready with them queued, the drain, then 1,000,000
# messages churned through and the disk space afterwards (benches/large_queue.py).
#
#   benches/large-queue.sh                                        # full size
#   QUEUE_MESSAGES=3000 QUEUE_CHURN=6000 benches/large-queue.sh   # the CI smoke
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v smtp-source >/dev/null && [ ! -x /usr/sbin/smtp-source ]; then
  # Only for smtp-source and smtp-sink: install it without a mail system.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
  postfix stop >/dev/null 2>&1 || true
fi
exec python3 benches/large_queue.py
