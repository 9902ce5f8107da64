#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md, side by side in one run: installs collectd-core,
# graphite-carbon, carbon-c-relay and nodejs (with the reference statsd from npm) when missing, builds release binaries, writes bench-results/report.md and
# report.json, and the relay ring against carbon-c-relay into bench-results/ring.md and ring.json.
# Pass --quick for a tiny run (numbers not meaningful), --only PART to run one part (--only ring: the ring alone).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v collectd >/dev/null 2>&1 || missing+=(collectd-core)
command -v carbon-relay >/dev/null 2>&1 || missing+=(graphite-carbon)
command -v carbon-c-relay >/dev/null 2>&1 || missing+=(carbon-c-relay)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"
fi
# The reference StatsD daemon for part 7, installed inside the repo (tests/node/node_modules).
[ -f tests/node/node_modules/statsd/stats.js ] || (cd tests/node && npm install --no-audit --no-fund --loglevel=error)
cargo build --release --bins
only=(); quick=(); prev=""
for a in "$@"; do
  [ "$a" = --quick ] && quick=(--quick)
  [ "$prev" = --only ] && only+=("$a")
  prev="$a"
done
[ "${only[*]}" = ring ] || target/release/puypuy-bench --out bench-results "$@"
if [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" ring "* ]]; then
  target/release/puypuy-bench-ring --out bench-results "${quick[@]}"
fi
