#!/usr/bin/env bash
# smarthost with a large queue in one command: 100,000 messages injected with the
# upstream down, restart-to-ready with them queued, the drain, the queue
# directory's size until it gives the space back, then 1,000,000 messages churned
# through and the disk space afterwards (benches/large_queue.py).
#
#   benches/large-queue.sh                                        # full size
#   QUEUE_CHURN=0 benches/large-queue.sh                          # without the churn
#   QUEUE_MESSAGES=3000 QUEUE_CHURN=6000 QUEUE_WATCH=20 benches/large-queue.sh   # the CI smoke
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/needs.sh
needs smtp-source:postfix python3:python3
exec python3 benches/large_queue.py
