#!/usr/bin/env bash
# Memory under large messages: 50 concurrent clients each send a 20 MB message (or a
# labelled document, or a zip bomb: third argument) through
# markgate serve (default rules) to smtp-sink; reports markgate's peak RSS (VmHWM).
# Goal (issue 9): peak RSS <= 128 MB, because messages past limits.spool_threshold spool to
# disk, stream to the next hop from the spool, and are classified from a bounded view.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-50}
MB=${2:-20}
# text: MB of plain text each; docx: a labelled Word file padded to MB each;
# bomb: the fixture zip bomb (112 KB inflating past the 64 MiB budget) each; docbomb: a
# Word file whose XML inflates to 100 MB.
KIND=${3:-text}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/markgate-target}
cargo build --release --locked -q
MG="$CARGO_TARGET_DIR/release/markgate"
# As the systemd units run it (see deploy/systemd/markgate.service); unset it to compare.
export GLIBC_TUNABLES=${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=1048576}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
SINK=$(port); MGP=$(port)
smtp-sink -u nobody "127.0.0.1:$SINK" 1024 >/dev/null 2>&1 & PIDS+=($!)
wait_port "$SINK"
printf 'listen: 127.0.0.1:%s\nlimits: {max_connections_per_client: 1000}\nstate_dir: %s/state\nupstream: {address: "127.0.0.1:%s", tls: none}\n' "$MGP" "$WORK" "$SINK" > "$WORK/mg.yaml"
MARKGATE_LOG=warn "$MG" serve --config "$WORK/mg.yaml" 2>"$WORK/mg.log" & MG_PID=$!; PIDS+=($MG_PID)
wait_port "$MGP"
BASE=$(awk '/VmRSS/{print $2}' "/proc/$MG_PID/status")
python3 fixtures/documents/make.py "$WORK/fx" >/dev/null
python3 - "$MGP" "$CLIENTS" "$MB" "$KIND" "$WORK/fx" <<'PY'
import os, smtplib, sys, threading
sys.path.insert(0, "fixtures/documents")
port, clients, mb, kind, fx = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
line = b"z" * 76 + b"\r\n"
if kind == "bomb":
    body = open(os.path.join(fx, "zip-bomb.eml"), "rb").read()
elif kind == "docbomb":
    # A Word file whose main part inflates to 100 MB: read (it is XML) until the budget.
    import make
    doc = make.zip_bytes([("[Content_Types].xml", make.content_types()),
                          ("word/document.xml", "<w:document>" + " " * (100 * 1024 * 1024))])
    body = make.message("report.docx", make.CT["docx"], doc).replace("bob@example.com", "bob@cps.cjsm.net").encode()
elif kind == "docx":
    import make
    doc = make.zip_bytes([("[Content_Types].xml", make.content_types()),
                          ("docProps/custom.xml", make.custom_xml([(make.OS_GUID, True, "OFFICIAL-SENSITIVE")])),
                          ("word/media/image1.png", os.urandom(mb * 1024 * 1024 * 3 // 4))], compression=0)
    body = make.message("report.docx", make.CT["docx"], doc).replace("bob@example.com", "bob@cps.cjsm.net").encode()
else:
    body = (b"From: jane@police.cjsm.net\r\nTo: bob@cps.cjsm.net\r\nSubject: [OFFICIAL] big\r\n\r\nOFFICIAL\r\n"
            + line * (mb * 1024 * 1024 // len(line)) + b"\r\nJane Doe\r\nTel: 020 7946 0018\r\n")
codes = []
def send():
    s = smtplib.SMTP("127.0.0.1", port, timeout=600); s.ehlo("mem")
    try:
        s.sendmail("jane@police.cjsm.net", ["bob@cps.cjsm.net"], body); codes.append(250)
    except smtplib.SMTPException as e:
        codes.append(str(e)[:80])
    s.quit()
ts = [threading.Thread(target=send) for _ in range(clients)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{codes.count(250)} of {clients} answered 250 (passed or held); others: {sorted(set(c for c in codes if c != 250))}")
PY
PEAK=$(awk '/VmHWM/{print $2}' "/proc/$MG_PID/status")
echo "markgate peak RSS: $((PEAK / 1024)) MB with $CLIENTS concurrent ${MB} MB messages (idle RSS $((BASE / 1024)) MB); goal <= 128 MB"
