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
. benches/needs.sh
needs smtp-source:postfix strace:strace python3:python3
exec python3 benches/relay_vs_postfix.py
