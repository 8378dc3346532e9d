# Shared by the bench scripts (sourced, not run): the work dir and its cleanup, the
# markgate build to measure, ports, readiness, CPU ticks, the benchmark message, and a
# private Postfix instance. Expects CARGO_TARGET_DIR to be set by the caller.

# Sets WORK (a fresh dir the postfix user can traverse) and PIDS; on exit everything in
# PIDS is stopped, every private Postfix under WORK too, and WORK removed.
bench_start() {
  WORK=$(mktemp -d)
  chmod 755 "$WORK"
  PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  postfix_stop_all
  pg_stop
  rm -rf "$WORK"
}

# MARKGATE_BENCH_STORE=postgres: a throwaway PostgreSQL cluster under $WORK/pg (fsync on,
# as a real one), its database migrated; prints the config line for markgate's store.
pg_start() { # MG_BINARY
  local bin d="$WORK/pg" p
  bin=$(pg_bin)
  p=$(port)
  mkdir -p "$d/sock"
  chown -R postgres: "$d"
  runuser -u postgres -- "$bin/initdb" -D "$d/data" -U postgres -A trust -E UTF8 >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$d/data" -l "$d/server.log" -w start \
    -o "-p $p -k $d/sock -c listen_addresses=127.0.0.1" >/dev/null
  psql -h "$d/sock" -p "$p" -U postgres -qc 'CREATE DATABASE markgate'
  local line="store: {backend: postgres, url: \"postgres://postgres@127.0.0.1:$p/markgate\", tls: disable, pool_size: 32}"
  printf 'state_dir: %s\n%s\n' "$d/mg-state" "$line" > "$d/migrate.yaml"
  "$1" store migrate --config "$d/migrate.yaml" >/dev/null
  echo "$line"
}
# pg_start runs in a command substitution (its output is the config line), so nothing it
# sets survives: the cluster is found by its data dir.
pg_stop() {
  if [ -f "$WORK/pg/data/postmaster.pid" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }

# MARKGATE_BIN: measure another build (an earlier commit's) with the same harness.
markgate_bin() {
  if [ -z "${MARKGATE_BIN:-}" ]; then
    cargo build --release --locked -q
  fi
  echo "${MARKGATE_BIN:-$CARGO_TARGET_DIR/release/markgate}"
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "no listener on $1" >&2; return 1; }
# User + system CPU ticks of a process (all its threads).
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The whole machine's busy and total CPU ticks (all cores): busy / total over a round says
# whether the round was bound by CPU (near 1) or by waiting (fsync, round trips).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# The benchmark message: 10 KB, RESTRICTED, signed, to a CJSM recipient; LF line ends
# (smtp-source adds the CR itself).
bench_message() {
  python3 - "$1" <<'PY'
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
}

# A private Postfix relaying to 127.0.0.1:RELAY_PORT under $WORK/pf-NAME, with EXTRA lines
# appended to main.cf; prints its SMTP port once it listens. Stop with
# `postfix -c $WORK/pf-NAME/etc stop` (postfix_stop_all does every one).
postfix_instance() { # NAME RELAY_PORT [EXTRA]
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
relayhost = [127.0.0.1]:$2
smtp_dns_support_level = disabled
smtp_host_lookup = native
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $d/maillog
maillog_file_prefixes = $d
smtp_tls_security_level = none
default_process_limit = 100
${3:-}
CF
  { echo "127.0.0.1:$p inet n - n - - smtpd"
    for s in "pickup unix n - n 60 1 pickup" "cleanup unix n - n - 0 cleanup" "qmgr unix n - n 300 1 qmgr" \
      "tlsmgr unix - - n 1000? 1 tlsmgr" "rewrite unix - - n - - trivial-rewrite" "bounce unix - - n - 0 bounce" \
      "defer unix - - n - 0 bounce" "trace unix - - n - 0 bounce" "verify unix - - n - 1 verify" \
      "flush unix n - n 1000? 0 flush" "proxymap unix - - n - - proxymap" "smtp unix - - n - - smtp" \
      "relay unix - - n - - smtp" "showq unix n - n - - showq" "error unix - - n - - error" \
      "retry unix - - n - - error" "discard unix - - n - - discard" "anvil unix - - n - 1 anvil" \
      "scache unix - - n - 1 scache" "postlog unix-dgram n - n - 1 postlogd"; do echo "$s"; done
  } > "$d/etc/master.cf"
  postfix -c "$d/etc" check >&2 || return 1
  postfix -c "$d/etc" start >/dev/null 2>&1 || return 1
  wait_port "$p" || return 1
  echo "$p"
}
postfix_stop_all() {
  for pf in "$WORK"/pf-*; do
    [ -f "$pf/etc/main.cf" ] && postfix -c "$pf/etc" stop >/dev/null 2>&1 || true
  done
}
