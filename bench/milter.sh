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
#   MILTER_SOCKET=unix bench/milter.sh ...     (Postfix reaches markgate over a unix socket)
#   MILTER_FLOOR=1 bench/milter.sh ...         (adds a third Postfix, with bench/null_milter.c:
#                                               what the milter protocol costs Postfix itself)
#
# Needs postfix (smtp-source, smtp-sink, a private instance) and python3; root (Postfix's
# private instance). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
ROUNDS=${2:-3}
SESSIONS=20
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/markgate-target}
. bench/lib.sh
MG=$(markgate_bin)
bench_start

HZ=$(getconf CLK_TCK)
bench_message "$WORK/msg.txt"

SINK_PORT=$(port)
mkdir -p "$WORK/sink"
(cd "$WORK/sink" && exec smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 > "$WORK/sink.out" 2>&1) &
PIDS+=($!)
wait_port "$SINK_PORT"

MILTER_PORT=$(port)
cat > "$WORK/markgate.yaml" <<YAML
state_dir: $WORK/state
hostname: markgate.bench
milter_socket_group: postfix
YAML
if [ "${MILTER_SOCKET:-inet}" = unix ]; then
  MILTER="unix:$WORK/milter.sock"
else
  MILTER="inet:127.0.0.1:$MILTER_PORT"
fi
"$MG" milter --config "$WORK/markgate.yaml" --listen "$MILTER" 2> "$WORK/markgate.log" &
MG_PID=$!
PIDS+=($MG_PID)
if [ "${MILTER_SOCKET:-inet}" = unix ]; then
  for _ in $(seq 200); do [ -S "$WORK/milter.sock" ] && break; sleep 0.05; done
else
  wait_port "$MILTER_PORT"
fi

# Two private Postfix instances, the same but for the milter.
PLAIN=$(postfix_instance plain "$SINK_PORT")
WITH=$(postfix_instance milter "$SINK_PORT" "smtpd_milters = $MILTER
milter_default_action = tempfail")
# The floor: a third, whose milter answers "continue" to everything (no policy at all).
if [ -n "${MILTER_FLOOR:-}" ]; then
  gcc -O2 -o "$WORK/null_milter" bench/null_milter.c
  NULL_PORT=$(port)
  "$WORK/null_milter" "$NULL_PORT" &
  NULL_PID=$!
  PIDS+=($NULL_PID)
  wait_port "$NULL_PORT"
  FLOOR=$(postfix_instance floor "$SINK_PORT" "smtpd_milters = inet:127.0.0.1:$NULL_PORT
milter_default_action = tempfail")
fi

sink_count() { tr '\r' '\n' < "$WORK/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }
queue_empty() { [ -z "$(postqueue -c "$WORK/pf-$1/etc" -j 2>/dev/null)" ]; }

# One round: N messages into Postfix; its rate is messages accepted per second (what the
# sending clients see), then wait until the sink has them all.
round() { # NAME PORT [PID] -> prints "rate cpu_ticks(PID, else markgate) machine_busy_fraction"
  local before after start end t0 t1 rate m0 m1 pid=${3:-$MG_PID}
  before=$(sink_count); before=${before:-0}
  t0=$(ticks "$pid")
  m0=$(machine_ticks)
  start=$(date +%s.%N)
  if ! smtp-source -s "$SESSIONS" -m "$N" -F "$WORK/msg.txt" -f jane@police.cjsm.net \
      -t bob@cps.cjsm.net "127.0.0.1:$2"; then
    echo "round $1: smtp-source failed" >&2; exit 1
  fi
  end=$(date +%s.%N)
  m1=$(machine_ticks)
  for _ in $(seq 600); do
    after=$(sink_count); after=${after:-0}
    [ $((after - before)) -ge "$N" ] && queue_empty "$1" && break
    sleep 0.1
  done
  t1=$(ticks "$pid")
  if [ $((after - before)) -ne "$N" ]; then
    echo "round $1: the sink got $((after - before)) of $N messages" >&2; exit 1
  fi
  rate=$(echo "$N / ($end - $start)" | bc -l)
  echo "$rate $((t1 - t0)) $(echo "$m0 $m1" | awk '{print ($3 - $1) / ($4 - $2)}')"
}

# Warm both (and markgate's classifier) before measuring.
round plain "$PLAIN" >/dev/null
round milter "$WITH" >/dev/null
[ -n "${MILTER_FLOOR:-}" ] && round floor "$FLOOR" "$NULL_PID" >/dev/null

printf '| round | Postfix alone (msg/s) | machine busy | Postfix + markgate milter (msg/s) | machine busy | ratio | markgate CPU s/1,000 msg |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n'
ratios=()
best_plain=0
with_rates=()
floors=()
for r in $(seq "$ROUNDS"); do
  read -r plain _ busy_plain < <(round plain "$PLAIN")
  read -r with cpu busy_with < <(round milter "$WITH")
  ratio=$(echo "$with / $plain" | bc -l)
  per=$(echo "$cpu / $HZ / $N * 1000" | bc -l)
  ratios+=("$ratio")
  with_rates+=("$with")
  best_plain=$(echo "if ($plain > $best_plain) $plain else $best_plain" | bc -l)
  printf '| %d | %.0f | %.0f %% | %.0f | %.0f %% | %.2f | %.2f |\n' "$r" "$plain" \
    "$(echo "$busy_plain * 100" | bc -l)" "$with" "$(echo "$busy_with * 100" | bc -l)" "$ratio" "$per"
  if [ -n "${MILTER_FLOOR:-}" ]; then
    read -r floor fcpu busy_floor < <(round floor "$FLOOR" "$NULL_PID")
    floors+=("$floor")
    printf '|   floor | (null milter) | | %.0f | %.0f %% | %.2f alone, markgate %.2f of it | %.2f |\n' "$floor" \
      "$(echo "$busy_floor * 100" | bc -l)" "$(echo "$floor / $plain" | bc -l)" \
      "$(echo "$with / $floor" | bc -l)" "$(echo "$fcpu / $HZ / $N * 1000" | bc -l)"
  fi
done
sorted=$(printf '%s\n' "${ratios[@]}" | sort -g)
min=$(echo "$sorted" | head -1)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
with_median=$(printf '%s\n' "${with_rates[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
printf '\nratio per pair: minimum %.2f, median %.2f; markgate-milter median against the best Postfix-alone round: %.2f\n' \
  "$min" "$median" "$(echo "$with_median / $best_plain" | bc -l)"
if [ -n "${MILTER_FLOOR:-}" ]; then
  floor_median=$(printf '%s\n' "${floors[@]}" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
  printf 'null-milter median against the best Postfix-alone round: %.2f (the floor for any milter)\n' \
    "$(echo "$floor_median / $best_plain" | bc -l)"
fi
printf 'every round delivered all %d messages (smtp-source exit 0, sink count, queues empty)\n' "$N"
