#!/usr/bin/env bash
# markgate's throughput benchmark: smtp-source into smtp-sink directly (the baseline), and
# through markgate serve with the default CJSM rules (every message runs the whole
# classifier and passes), alternating rounds in one run so the figure that counts is the
# ratio. Also runs Haraka (npm Haraka, queue/smtp_forward) and a private Postfix relay as
# peers when they are available. See bench/RESULTS.md.
#
# Honest by construction: the direct baseline swings 2-3x between rounds, so every round is
# printed with its pair, the ratio of each adjacent (direct, markgate) pair, their median and
# minimum, and markgate's median against the *best* direct round (never a median baseline
# that can land on a slow round). Every run must deliver all its messages: smtp-source's exit
# status, the sink's count and markgate's pass counter are checked after each round, and the
# script exits 1 when any run lost a message. markgate's CPU per 1,000 messages (user +
# system from /proc/PID/stat) per round and overall, and its peak RSS. Beside each rate, how
# busy the whole machine was during it (all cores, /proc/stat): near 100 % the round was
# bound by CPU, so markgate's share of it is what the ratio measures.
#
#   bench/run.sh [MESSAGES] [ROUNDS]        (defaults 5000 and 5)
#   MARKGATE_BENCH_STORE=postgres bench/run.sh ...   (the PostgreSQL store, on this machine)
#
# Needs postfix (smtp-source, smtp-sink) and python3; node/npm for Haraka. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
ROUNDS=${2:-5}
SESSIONS=20
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/markgate-target}
. bench/lib.sh
MG=$(markgate_bin)
bench_start

bench_message "$WORK/msg.txt"

SINK_PORT=$(port)
smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>&1 &
PIDS+=($!)
wait_port "$SINK_PORT"

MG_PORT=$(port)
METRICS_PORT=$(port)
STORE_LINE=""
if [ "${MARKGATE_BENCH_STORE:-files}" = postgres ]; then
  STORE_LINE=$(pg_start "$MG")
fi
cat > "$WORK/mg.yaml" <<EOF
listen: 127.0.0.1:$MG_PORT
metrics_listen: 127.0.0.1:$METRICS_PORT
state_dir: $WORK/state
upstream: {address: "127.0.0.1:$SINK_PORT", tls: none}
tracking: {subject: hash}
limits: {max_connections: 1024, max_connections_per_client: 1024}
$STORE_LINE
EOF
MARKGATE_LOG=warn "$MG" serve --config "$WORK/mg.yaml" 2>"$WORK/mg.log" &
MG_PID=$!
PIDS+=($MG_PID)
wait_port "$MG_PORT"

# rate PORT -> messages per second for N messages over SESSIONS sessions; a failed
# smtp-source is a lost run.
LOST=0
rate() {
  local start end
  start=$(date +%s.%N)
  if ! smtp-source -s "$SESSIONS" -m "$N" -F "$WORK/msg.txt" -f jane@police.cjsm.net -t bob@cps.cjsm.net "127.0.0.1:$1" >&2; then
    echo "smtp-source to port $1 failed" >&2
    touch "$WORK/lost"
  fi
  end=$(date +%s.%N)
  python3 -c "print(f'{$N/($end-$start):.0f}')"
}
# What the sink has counted so far (its -c counter), and markgate's passes.
sink_count() { tr '\r' '\n' < "$WORK/sink.out" | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2; }
passes() {
  python3 - "$METRICS_PORT" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
print(int(sum(float(l.rsplit(' ', 1)[1]) for l in text.splitlines()
              if l.startswith('markgate_messages_total{') and 'action="pass"' in l)))
PY
}
# Waits (up to 30 s) until the sink has counted N more than `before`; 1 when it never does.
delivered() {
  local before=$1 now
  for _ in $(seq 300); do
    now=$(sink_count); now=${now:-0}
    [ $((now - before)) -ge "$N" ] && return 0
    sleep 0.1
  done
  echo "the sink counted $((now - before)) of $N" >&2
  return 1
}

declare -A RATES
PEERS=(direct markgate)

# Optional peers: Haraka (npm) and a private Postfix relay.
HARAKA_PORT=""
if command -v npx >/dev/null 2>&1 && [ -d "${HARAKA_DIR:-$HOME/.cache/markgate-haraka}/node_modules/Haraka" ]; then
  HD="${HARAKA_DIR:-$HOME/.cache/markgate-haraka}"
  HARAKA_PORT=$(port)
  rm -rf "$WORK/haraka"
  (cd "$HD" && npx haraka -i "$WORK/haraka" >/dev/null)
  printf 'relay\nqueue/smtp_forward\nrdns_ok\n' > "$WORK/haraka/config/plugins"
  printf 'exports.hook_lookup_rdns = function (next) { next(OK, "localhost"); };\n' > "$WORK/haraka/plugins/rdns_ok.js"
  printf '[relay]\nacl=true\n' > "$WORK/haraka/config/relay.ini"
  printf '127.0.0.1/32\n' > "$WORK/haraka/config/relay_acl_allow"
  printf 'host=127.0.0.1\nport=%s\nenable_outbound=true\n' "$SINK_PORT" > "$WORK/haraka/config/smtp_forward.ini"
  printf 'listen=127.0.0.1:%s\nnodes=0\n' "$HARAKA_PORT" > "$WORK/haraka/config/smtp.ini"
  # exec the haraka script itself (not npx, which forks npm, sh and node): $! is then the
  # node process, so cleanup stops it by PID.
  (cd "$HD" && exec node_modules/.bin/haraka -c "$WORK/haraka" >"$WORK/haraka.log" 2>&1) &
  PIDS+=($!)
  wait_port "$HARAKA_PORT" && PEERS+=(haraka)
fi
PF_PORT=""
if [ -x /usr/sbin/postfix ] && PF_PORT=$(postfix_instance relay "$SINK_PORT"); then
  PEERS+=(postfix)
fi

peer_port() {
  case $1 in direct) echo "$SINK_PORT";; markgate) echo "$MG_PORT";; haraka) echo "$HARAKA_PORT";; postfix) echo "$PF_PORT";; esac
}

MG_TICKS=0
ROUND_LINES=()
RATIOS=()
for r in $(seq "$ROUNDS"); do
  line="| $r"
  for p in "${PEERS[@]}"; do
    before=$(sink_count); before=${before:-0}
    if [ "$p" = markgate ]; then t0=$(ticks "$MG_PID"); p0=$(passes); fi
    m0=$(machine_ticks)
    v=$(rate "$(peer_port "$p")")
    busy=$(echo "$m0 $(machine_ticks)" | awk '{printf "%.0f", 100 * ($3 - $1) / ($4 - $2)}')
    delivered "$before" || { echo "round $r, $p: messages lost" >&2; LOST=1; }
    if [ "$p" = markgate ]; then
      ticks=$(( $(ticks "$MG_PID") - t0 ))
      MG_TICKS=$((MG_TICKS + ticks))
      p1=$(passes)
      if [ $((p1 - p0)) -ne "$N" ]; then
        echo "round $r: markgate passed $((p1 - p0)) of $N" >&2; LOST=1
      fi
      MG_CPU=$(python3 -c "print(f'{$ticks/$(getconf CLK_TCK)/$N*1000:.3f}')")
    fi
    RATES[$p]="${RATES[$p]:-} $v"
    line="$line | $v ($busy %)"
  done
  d=$(echo "${RATES[direct]}" | awk '{print $NF}')
  m=$(echo "${RATES[markgate]}" | awk '{print $NF}')
  ratio=$(python3 -c "print(f'{$m/$d:.2f}')")
  RATIOS+=("$ratio")
  ROUND_LINES+=("$line | $ratio | $MG_CPU |")
done

# Added latency: paced, one message at a time, markgate against direct.
latency() {
  python3 - "$1" "$WORK/msg.txt" <<'EOF'
import smtplib, sys, time
port = int(sys.argv[1]); body = open(sys.argv[2]).read().replace("\n", "\r\n").encode()
s = smtplib.SMTP("127.0.0.1", port); s.ehlo("bench")
t = []
for i in range(300):
    a = time.perf_counter(); s.sendmail("jane@police.cjsm.net", ["bob@cps.cjsm.net"], body); t.append(time.perf_counter() - a)
    time.sleep(0.002)
s.quit(); t.sort()
print(f"{t[len(t)//2]*1000:.2f} {t[int(len(t)*0.99)]*1000:.2f}")
EOF
}
read -r D50 D99 < <(latency "$SINK_PORT")
read -r M50 M99 < <(latency "$MG_PORT")
HZ=$(getconf CLK_TCK)
RSS=$(awk '/VmHWM/{print $2}' "/proc/$MG_PID/status")

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
DIRECT_BEST=$(echo "${RATES[direct]}" | tr ' ' '\n' | grep -v '^$' | sort -n | tail -1)
MG_MEDIAN=$(echo "${RATES[markgate]}" | median)
echo
echo "markgate benchmark: $N messages of 10 KB, $SESSIONS sessions, $ROUNDS alternating rounds, $(nproc) cores"
echo
header="| round"; rule="| ---"
for p in "${PEERS[@]}"; do header="$header | $p msg/s (machine busy)"; rule="$rule | ---:"; done
echo "$header | markgate / direct | markgate CPU s/1,000 |"
echo "$rule | ---: | ---: |"
for l in "${ROUND_LINES[@]}"; do echo "$l"; done
echo
echo "ratio per pair: median $(printf '%s ' "${RATIOS[@]}" | median), minimum $(printf '%s\n' "${RATIOS[@]}" | sort -n | head -1)"
echo "markgate median $MG_MEDIAN msg/s against the best direct round $DIRECT_BEST: $(python3 -c "print(f'{$MG_MEDIAN/$DIRECT_BEST:.2f}')")"
for p in "${PEERS[@]}"; do
  [ "$p" = direct ] || [ "$p" = markgate ] && continue
  echo "$p median $(echo "${RATES[$p]}" | median) msg/s"
done
echo "added latency (paced, 300 msgs): p50 $(python3 -c "print(f'{$M50-$D50:.2f}')") ms, p99 $(python3 -c "print(f'{$M99-$D99:.2f}')") ms (direct p50 $D50 ms, p99 $D99 ms; via markgate p50 $M50, p99 $M99)"
echo "markgate CPU: $(python3 -c "print(f'{$MG_TICKS/$HZ/($N*$ROUNDS)*1000:.3f}')") s per 1,000 messages over all rounds; peak RSS $((RSS / 1024)) MB"
[ -e "$WORK/lost" ] && LOST=1
if [ "$LOST" -ne 0 ]; then
  echo "FAILED: a run did not deliver all its messages (see above)" >&2
  exit 1
fi
echo "every run delivered all $N messages (smtp-source exit 0, the sink's count, markgate's pass counter)"
