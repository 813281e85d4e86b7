#!/usr/bin/env bash
# Relays the same smtp-source load into smtp-sink through Postfix and through
# smarthost, side by side on this machine, alternating A B A B, and prints the
# end-to-end rates and their ratio.
#
#   benches/relay-vs-postfix.sh                         # 3 rounds of 5000 messages
#   BENCH_MESSAGES=500 BENCH_ROUNDS=1 benches/relay-vs-postfix.sh   # smoke
#
# Needs root: it reconfigures the local Postfix instance as a relay on 127.0.0.1
# (main.cf and master.cf are backed up and restored). Run it on a test machine.
set -euo pipefail
cd "$(dirname "$0")/.."

MSGS=${BENCH_MESSAGES:-5000}
ROUNDS=${BENCH_ROUNDS:-3}
SESS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-2048}
P_PORT=${BENCH_POSTFIX_PORT:-24025}
S_PORT=${BENCH_SMARTHOST_PORT:-24026}
P_SINK=${BENCH_POSTFIX_SINK:-24027}
S_SINK=${BENCH_SMARTHOST_SINK:-24028}

command -v smtp-source >/dev/null || PATH=$PATH:/usr/sbin
command -v smtp-source >/dev/null || {
  echo "postfix-provided smtp-source missing: apt-get install postfix" >&2; exit 1; }

cargo build --release -q
BIN=target/release/smarthost
WORK=$(mktemp -d)
cleanup() {
  [ -n "${SH_PID:-}" ] && kill "$SH_PID" 2>/dev/null || true
  [ -n "${SINK1:-}" ] && kill "$SINK1" 2>/dev/null || true
  [ -n "${SINK2:-}" ] && kill "$SINK2" 2>/dev/null || true
  postfix stop >/dev/null 2>&1 || true
  if [ -f "$WORK/main.cf" ]; then cp "$WORK/main.cf" /etc/postfix/main.cf; fi
  if [ -f "$WORK/main.cf.absent" ]; then rm -f /etc/postfix/main.cf; fi
  if [ -f "$WORK/master.cf" ]; then cp "$WORK/master.cf" /etc/postfix/master.cf; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- sinks: one per relay, counting what arrives --------------------------------
smtp-sink -u root -c 127.0.0.1:$P_SINK 1000 > "$WORK/sink-postfix.out" 2>&1 & SINK1=$!
smtp-sink -u root -c 127.0.0.1:$S_SINK 1000 > "$WORK/sink-smarthost.out" 2>&1 & SINK2=$!

# --- Postfix as a smarthost relay -------------------------------------------------
# Debian's "No configuration" install has no main.cf: start from an empty one.
if [ -f /etc/postfix/main.cf ]; then cp /etc/postfix/main.cf "$WORK/main.cf"; else touch /etc/postfix/main.cf "$WORK/main.cf.absent"; fi
cp /etc/postfix/master.cf "$WORK/master.cf"
postconf -e "relayhost = [127.0.0.1]:$P_SINK" "inet_interfaces = loopback-only" \
  "mynetworks = 127.0.0.0/8" "smtpd_relay_restrictions = permit_mynetworks, reject" \
  "mydestination =" "default_process_limit = 200" "smtp_tls_security_level = none" \
  "maillog_file = /var/log/postfix-bench.log" "compatibility_level = 3.6" \
  "myhostname = bench.test" "smtpd_banner = bench.test ESMTP"
postconf -M "$P_PORT/inet=$P_PORT inet n - n - - smtpd"
postfix start >/dev/null 2>&1 || postfix reload >/dev/null

# --- smarthost --------------------------------------------------------------------
cat > "$WORK/smarthost.toml" <<EOF
hostname = "bench.test"
listen = ["127.0.0.1:$S_PORT"]
queue_path = "$WORK/queue"
[limits]
max_connections = 500
[[route]]
name = "sink"
host = "127.0.0.1"
port = $S_SINK
tls = "none"
max_connections = 20
[routing]
default = "sink"
[local]
socket_dir = "$WORK/run"
drop_dir = "$WORK/drop"
EOF
RUST_LOG=warn $BIN serve --config "$WORK/smarthost.toml" 2> "$WORK/smarthost.log" & SH_PID=$!
sleep 1

sink_count() { # the sink prints a running counter with -c
  local n
  n=$(tr '\r' '\n' < "$1" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 || true)
  echo "${n:-0}"
}

run() { # name port sinkfile -> seconds for MSGS to reach the sink
  local name=$1 port=$2 sink=$3
  local before; before=$(sink_count "$sink"); before=${before:-0}
  local start; start=$(date +%s.%N)
  smtp-source -s "$SESS" -l "$SIZE" -m "$MSGS" -f bench@example.com -t sink@example.net 127.0.0.1:"$port"
  local accepted; accepted=$(date +%s.%N)
  while :; do
    local now; now=$(sink_count "$sink"); now=${now:-0}
    [ $((now - before)) -ge "$MSGS" ] && break
    sleep 0.05
  done
  local end; end=$(date +%s.%N)
  echo "$(echo "$accepted - $start" | bc) $(echo "$end - $start" | bc)"
}

printf '%-10s %-5s %12s %12s\n' relay round "accept msg/s" "e2e msg/s"
p_total=0; s_total=0
for r in $(seq 1 "$ROUNDS"); do
  read -r pa pe < <(run postfix $P_PORT "$WORK/sink-postfix.out")
  printf '%-10s %-5s %12.0f %12.0f\n' postfix "$r" "$(echo "$MSGS / $pa" | bc -l)" "$(echo "$MSGS / $pe" | bc -l)"
  read -r sa se < <(run smarthost $S_PORT "$WORK/sink-smarthost.out")
  printf '%-10s %-5s %12.0f %12.0f\n' smarthost "$r" "$(echo "$MSGS / $sa" | bc -l)" "$(echo "$MSGS / $se" | bc -l)"
  p_total=$(echo "$p_total + $pe" | bc -l); s_total=$(echo "$s_total + $se" | bc -l)
done
printf 'end-to-end ratio smarthost/postfix (%d x %d msgs, %d B, %d sessions): %.2f\n' \
  "$ROUNDS" "$MSGS" "$SIZE" "$SESS" "$(echo "$p_total / $s_total" | bc -l)"
