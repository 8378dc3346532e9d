#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz, nightly). Not part of CI's stable gate.
#   fuzz/run.sh [SECONDS_PER_TARGET]   (default 3600)
# Corpora live in fuzz/corpus/TARGET (minimise with `cargo +nightly fuzz cmin TARGET`);
# crashes land in fuzz/artifacts/TARGET and each becomes a regression test.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-3600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
for t in smtp_command data_reader marking_grammar classifier rules_loader own_headers parity; do
  mkdir -p "corpus/$t"
  echo "== $t ($SECS s)"
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 | tail -n 3
done
