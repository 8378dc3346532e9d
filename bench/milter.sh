#!/usr/bin/env bash
# The milter path's cost to the MTA that carries the mail (issue 24): a private Postfix
# relaying 10 KB RESTRICTED messages from smtp-source to smtp-sink, in alternating rounds
# without and with `smtpd_milters` pointing at `markgate milter` (default rules: every
# message is classified and passes). Each round is checked for completeness (smtp-source
# exit status 0, the sink's count of messages received = N, nothing left in Postfix's
# queue); a round that lost a message fails the script (exit 1). Prints every round, the
# ratio of each adjacent pair, their minimum and median, the ratio against the best
# Postfix-alone round, and markgate's CPU per 1,000 messages (user + system from
# /proc/PID/stat).
#
#   bench/milter.sh [MESSAGES] [ROUNDS]        (defaults 2000 and 3)
#
# Needs postfix (smtp-source, smtp-sink, a private instance) and python3; root (Postfix's
# private instance). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ROUNDS=${2:-3}
SESSIONS=20
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/markgate-target}
# MARKGATE_BIN: measure another build (an earlier commit's) with the same harness.
if [ -z "${MARKGATE_BIN:-}" ]; then
  cargo build --release --locked -q
fi
MG="${MARKGATE_BIN:-$CARGO_TARGET_DIR/release/markgate}"
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  for pf in "$WORK"/pf-*; do
    [ -f "$pf/etc/main.cf" ] && postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; return 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# 10 KB, RESTRICTED, signed, to a CJSM recipient; LF line ends (smtp-source adds CR).
python3 - "$WORK/msg.txt" <<'PY'
import sys
m = ("From: Jane Doe <jane@police.cjsm.net>\nTo: bob@cps.cjsm.net\nSubject: [RESTRICTED] Case file 4411\n"
     "Message-ID: <bench@police.cjsm.net>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"
     "RESTRICTED\n\nDear Bob,\n\n")
line = "Please find the witness statements and the case summary attached as discussed.\n"
tail = "\nJane Doe\nWitness Care Unit\nTel: 020 7946 0018\nThis e-mail is intended solely for the addressee.\n"
while len(m) + len(line) + len(tail) < 10240:
    m += line
open(sys.argv[1], "w").write(m + tail)
PY

SINK_PORT=$(port)
mkdir -p "$WORK/sink"
(cd "$WORK/sink" && exec smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 > "$WORK/sink.out" 2>&1) &
PIDS+=($!)
wait_port "$SINK_PORT"

MILTER_PORT=$(port)
cat > "$WORK/markgate.yaml" <<YAML
state_dir: $WORK/state
hostname: markgate.bench
YAML
"$MG" milter --config "$WORK/markgate.yaml" --listen "inet:127.0.0.1:$MILTER_PORT" 2> "$WORK/markgate.log" &
MG_PID=$!
PIDS+=($MG_PID)
wait_port "$MILTER_PORT"

# Two private Postfix instances, the same but for the milter.
postfix_instance() { # NAME MILTER(yes/no) -> prints its SMTP port
  local d="$WORK/pf-$1" p
  p=$(port)
  mkdir -p "$d/etc" "$d/queue" "$d/data"
  chown postfix "$d/data"
  cat > "$d/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.bench
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$SINK_PORT
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $d/maillog
maillog_file_prefixes = $d
smtp_tls_security_level = none
default_process_limit = 100
CF
  if [ "$2" = yes ]; then
    printf 'smtpd_milters = inet:127.0.0.1:%s\nmilter_default_action = tempfail\n' "$MILTER_PORT" >> "$d/etc/main.cf"
  fi
  cat > "$d/etc/master.cf" <<CF
127.0.0.1:$p inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
CF
  postfix -c "$d/etc" check >&2
  postfix -c "$d/etc" start >/dev/null 2>&1
  wait_port "$p"
  echo "$p"
}
PLAIN=$(postfix_instance plain no)
WITH=$(postfix_instance milter yes)

sink_count() { tr '\r' '\n' < "$WORK/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }
queue_empty() { [ -z "$(postqueue -c "$WORK/pf-$1/etc" -j 2>/dev/null)" ]; }

# One round: N messages into Postfix; its rate is messages accepted per second (what the
# sending clients see), then wait until the sink has them all.
round() { # NAME PORT -> prints "rate cpu_ticks"
  local before after start end t0 t1 rate
  before=$(sink_count); before=${before:-0}
  t0=$(ticks "$MG_PID")
  start=$(date +%s.%N)
  if ! smtp-source -s "$SESSIONS" -m "$N" -F "$WORK/msg.txt" -f jane@police.cjsm.net \
      -t bob@cps.cjsm.net "127.0.0.1:$2"; then
    echo "round $1: smtp-source failed" >&2; exit 1
  fi
  end=$(date +%s.%N)
  for _ in $(seq 600); do
    after=$(sink_count); after=${after:-0}
    [ $((after - before)) -ge "$N" ] && queue_empty "$1" && break
    sleep 0.1
  done
  t1=$(ticks "$MG_PID")
  if [ $((after - before)) -ne "$N" ]; then
    echo "round $1: the sink got $((after - before)) of $N messages" >&2; exit 1
  fi
  rate=$(echo "$N / ($end - $start)" | bc -l)
  echo "$rate $((t1 - t0))"
}

# Warm both (and markgate's classifier) before measuring.
round plain "$PLAIN" >/dev/null
round milter "$WITH" >/dev/null

printf '| round | Postfix alone (msg/s) | Postfix + markgate milter (msg/s) | ratio | markgate CPU s/1,000 msg |\n'
printf '| --- | ---: | ---: | ---: | ---: |\n'
ratios=()
best_plain=0
with_rates=()
for r in $(seq "$ROUNDS"); do
  read -r plain _ < <(round plain "$PLAIN")
  read -r with cpu < <(round milter "$WITH")
  ratio=$(echo "$with / $plain" | bc -l)
  per=$(echo "$cpu / $HZ / $N * 1000" | bc -l)
  ratios+=("$ratio")
  with_rates+=("$with")
  best_plain=$(echo "if ($plain > $best_plain) $plain else $best_plain" | bc -l)
  printf '| %d | %.0f | %.0f | %.2f | %.2f |\n' "$r" "$plain" "$with" "$ratio" "$per"
done
sorted=$(printf '%s\n' "${ratios[@]}" | sort -g)
min=$(echo "$sorted" | head -1)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
with_median=$(printf '%s\n' "${with_rates[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
printf '\nratio per pair: minimum %.2f, median %.2f; markgate-milter median against the best Postfix-alone round: %.2f\n' \
  "$min" "$median" "$(echo "$with_median / $best_plain" | bc -l)"
printf 'every round delivered all %d messages (smtp-source exit 0, sink count, queues empty)\n' "$N"
