#!/usr/bin/env bash
# The whole test suite: installs the test servers when missing (Debian packages), builds the
# binaries, runs every unit and integration test. Run as root on Debian 12 (or with sudo rights).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

missing=()
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v carbon-cache >/dev/null 2>&1 || missing+=(graphite-carbon)
/usr/bin/python3 -c 'import whisper' >/dev/null 2>&1 && command -v whisper-fetch >/dev/null 2>&1 || missing+=(python3-whisper)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || missing+=(prometheus-node-exporter)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -x /usr/sbin/apache2 ] || missing+=(apache2)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v php-fpm8.2 >/dev/null 2>&1 || [ -x /usr/sbin/php-fpm8.2 ] || missing+=(php-fpm)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v collectd >/dev/null 2>&1 || missing+=(collectd-core)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
/usr/bin/python3 -c 'import statsd' >/dev/null 2>&1 || missing+=(python3-statsd)
/usr/bin/python3 -c 'import pymysql' >/dev/null 2>&1 || missing+=(python3-pymysql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test servers: ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"
fi

# The reference StatsD daemon (statsd 0.9) and a DogStatsD client (hot-shots), pinned in
# tests/node/package.json, installed inside the repo (tests/node/node_modules, ignored by git).
[ -f tests/node/node_modules/statsd/stats.js ] && [ -d tests/node/node_modules/hot-shots ] \
  || (cd tests/node && npm install --no-audit --no-fund --loglevel=error)

# The tree stays formatted and clippy-clean (warnings are errors), like the code review would ask.
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
cargo build --release --bins
# The package test needs cargo-deb; install it before the tests so its compile does not compete
# with timing-sensitive tests for the two cores.
[ -x target/tools/bin/cargo-deb ] || cargo install --quiet --locked --root target/tools cargo-deb
cargo test --release --workspace -- --test-threads="${PUYPUY_TEST_THREADS:-4}" "$@"
