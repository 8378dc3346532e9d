#!/usr/bin/env bash
# 1,000 concurrent idle connections (issue 20): holds CONNECTIONS SMTP sessions open
# (greeted, then silent) against markgate serve, then measures how long a new client waits
# for its greeting (20 tries: median and worst) and markgate's RSS with them open and its
# peak. Fails (exit 1) if a held connection was not greeted or a new client's greeting took
# over 100 ms.
#
#   bench/idle.sh [CONNECTIONS]        (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${1:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/markgate-target}
. bench/lib.sh
MG=$(markgate_bin)
bench_start
ulimit -n 8192
MG_PORT=$(port)
cat > "$WORK/mg.yaml" <<YAML
listen: 127.0.0.1:$MG_PORT
state_dir: $WORK/state
limits: {max_connections: $((CONNECTIONS + 100)), max_connections_per_client: $((CONNECTIONS + 100))}
YAML
MARKGATE_LOG=warn "$MG" serve --config "$WORK/mg.yaml" 2>"$WORK/mg.log" &
MG_PID=$!
PIDS+=($MG_PID)
wait_port "$MG_PORT"
sleep 0.5
IDLE_RSS=$(awk '/VmRSS/{print $2}' "/proc/$MG_PID/status")
status=0
python3 - "$MG_PORT" "$CONNECTIONS" "$MG_PID" <<'PY' || status=1
import socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.append(s)
greeted = 0
for s in held:
    if s.recv(512).startswith(b"220"):
        greeted += 1
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
waits = []
for _ in range(20):
    t = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    line = c.recv(512)
    waits.append((time.perf_counter() - t) * 1000)
    assert line.startswith(b"220"), line
    c.sendall(b"QUIT\r\n"); c.recv(512); c.close()
waits.sort()
hwm = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
print(f"{greeted} of {n} held connections greeted; markgate RSS with them open {rss/1024:.1f} MB (peak {hwm/1024:.1f} MB)")
print(f"a new client's greeting: median {waits[len(waits)//2]:.2f} ms, worst {waits[-1]:.2f} ms (20 tries)")
ok = greeted == n and waits[-1] <= 100
for s in held: s.close()
sys.exit(0 if ok else 1)
PY
echo "markgate RSS before the connections: $((IDLE_RSS / 1024)) MB"
exit $status
