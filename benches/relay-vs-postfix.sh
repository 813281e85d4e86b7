#!/usr/bin/env bash
# The benchmark in one command: Postfix and smarthost side by side, relaying
# smtp-source's load to smtp-sink, A B A B, over the grid of message sizes and
# session counts; prints the tables (see benches/relay_vs_postfix.py for the
# BENCH_* settings).
#
#   benches/relay-vs-postfix.sh            # full grid: 2/20/100 KB x 1/20/100 sessions, 3 rounds
#   BENCH_MESSAGES=300 BENCH_ROUNDS=1 BENCH_SIZES=2048 BENCH_SESSIONS=20 \
#     BENCH_LATENCY_MESSAGES=200 benches/relay-vs-postfix.sh   # the CI smoke
#
# Needs root (it reconfigures the local Postfix on a loopback port and restores
# /etc/postfix afterwards); installs postfix and strace when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for t in smtp-source:postfix strace:strace python3:python3; do
  command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  # Postfix is only the baseline here: install it without a mail system.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  postfix stop >/dev/null 2>&1 || true
fi
exec python3 benches/relay_vs_postfix.py
