#!/usr/bin/env bash
# puypuy.sh — start, stop, restart and report the PuyPuy processes, each under a watchdog that
# restarts it when it dies.
#
#   [PUYPUY_CONFIG=/path/config.ini] ./puypuy.sh start|stop|restart|status|reload [PROCESS]
#   ./puypuy.sh status --json        processes and the shipper's self-metrics as JSON
#   ./puypuy.sh once                 run every producer once, print what would be sent (no sending)
#   ./puypuy.sh check-config         validate config.ini, print every problem (exit 2 if any)
#   ./puypuy.sh package              build the Debian package into target/debian/ (cargo-deb)
#
# PROCESS is shipper, collector, script-runner or jmx-bridge; without it the command acts on all
# that the config uses (shipper first on start, last on stop; the jmx-bridge only with a [JMX]
# section). Binaries run in place from this checkout's
# target/release/, built with cargo when missing or older than the sources. Exit codes follow the
# LSB init-script conventions (status: 0 running, 1 dead with a pid file left, 3 not running).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Installed from the Debian package (/usr/share/puypuy): the config is in /etc, binaries in /usr/bin.
INSTALLED=0
if [ ! -f "$HERE/Cargo.toml" ] && [ -x /usr/bin/puypuy-shipper ]; then INSTALLED=1; fi
DEFAULT_CONFIG=$HERE/config.ini
[ "$INSTALLED" = 1 ] && DEFAULT_CONFIG=/etc/puypuy/config.ini
CONFIG=${PUYPUY_CONFIG:-$DEFAULT_CONFIG}
case "$CONFIG" in /*) ;; *) CONFIG="$PWD/$CONFIG" ;; esac
CONFIG_DIR=$(dirname "$CONFIG")
DEFAULT_BIN_DIR=$HERE/target/release
[ "$INSTALLED" = 1 ] && DEFAULT_BIN_DIR=/usr/bin
BIN_DIR=${PUYPUY_BIN_DIR:-$DEFAULT_BIN_DIR}
ALL_PROCESSES=(shipper collector script-runner jmx-bridge)
STOP_TIMEOUT=${PUYPUY_STOP_TIMEOUT:-30}
# Long enough for another puypuy.sh to stop every process and start them again.
LOCK_TIMEOUT=$((STOP_TIMEOUT * 5 + 60))

die() { echo "puypuy.sh: $*" >&2; exit "${2:-1}"; }

# ini_get SECTION KEY: the value as Python's ConfigParser reads it (`key: v` or `key = v`).
ini_get() {
  [ -r "$CONFIG" ] || return 0
  awk -v sec="$1" -v key="$2" '
    /^[ \t]*[#;]/ { next }
    /^[ \t]*\[/ { s=$0; sub(/^[ \t]*\[/, "", s); sub(/\][ \t\r]*$/, "", s); insec = (s == sec); next }
    insec {
      if (!match($0, /[:=]/)) next
      k = substr($0, 1, RSTART - 1); v = substr($0, RSTART + 1)
      gsub(/^[ \t]+|[ \t\r]+$/, "", k); gsub(/^[ \t]+|[ \t\r]+$/, "", v)
      if (k == key) { print v; exit }
    }' "$CONFIG"
}

has_section() { [ -r "$CONFIG" ] && grep -Eq "^[[:space:]]*\[$1(:[^]]*)?\][[:space:]]*$" "$CONFIG"; }

resolve() { case "$1" in /*) echo "$1" ;; *) echo "$CONFIG_DIR/$1" ;; esac; }

load_paths() {
  local v
  v=$(ini_get SelfConfig tmpdir); TMPDIR_=$(resolve "${v:-/tmp/puypuy}")
  v=$(ini_get SelfConfig pid_file); PID_FILE=$(resolve "${v:-$TMPDIR_/puypuy.pid}")
  v=$(ini_get SelfConfig log_file); LOG_FILE=$(resolve "${v:-$TMPDIR_/puypuy.log}")
  RUN_USER=$(ini_get SelfConfig run_user)
  [ -n "$RUN_USER" ] || RUN_USER=$(ini_get SelfConfig puypuy_user)
  PID_BASE=${PID_FILE%.pid}
}

binary_of() { echo "$BIN_DIR/puypuy-$1"; }
child_pidfile() { echo "$PID_BASE.$1.pid"; }
watchdog_pidfile() { echo "$PID_BASE.$1.watchdog.pid"; }
restarts_file() { echo "$PID_BASE.$1.restarts"; }
lock_file() { echo "$PID_BASE.lock"; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -r "$1" ] && tr -dc '0-9' < "$1"; }

# ours NAME PID: PID is a NAME process of PuyPuy (its binary, or its watchdog: puypuy.sh
# _watchdog NAME), not an unrelated process that was given a recycled pid. A zombie is not ours.
ours() {
  local name=$1 pid=${2:-} args i
  [ -n "$pid" ] || return 1
  mapfile -d '' -t args 2>/dev/null < "/proc/$pid/cmdline" || return 1
  for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[$i]##*/}" = "puypuy-$name" ] && return 0
    [ "${args[$i]}" = _watchdog ] && [ "${args[$((i + 1))]:-}" = "$name" ] && return 0
  done
  return 1
}

log_line() { echo "$(date -u +%Y-%m-%dT%H:%M:%S.000Z) INFO  puypuy.sh: $*" >> "$LOG_FILE"; }

# Which processes this config runs: the jmx-bridge only with a JMX target, the script-runner
# only once it is built into this checkout.
configured() {
  case "$1" in
    shipper|collector) return 0 ;;
    script-runner) [ -d "$HERE/script-runner" ] ;;
    jmx-bridge) [ -d "$HERE/jmx-bridge" ] && has_section JMX ;;
    *) return 1 ;;
  esac
}

build_if_needed() {
  local stale=0 name bin
  if [ -n "${PUYPUY_BIN_DIR:-}" ] || [ "$INSTALLED" = 1 ]; then
    # Binaries from elsewhere (a package, a test build): use them as they are.
    for name in "$@"; do [ -x "$(binary_of "$name")" ] || die "$(binary_of "$name") is missing"; done
    return 0
  fi
  for name in "$@"; do
    bin=$(binary_of "$name")
    if [ ! -x "$bin" ]; then stale=1; break; fi
    if [ -n "$(find "$HERE/Cargo.toml" "$HERE/Cargo.lock" "$HERE/common" "$HERE/$name" \
                 -newer "$bin" -type f \( -name '*.rs' -o -name 'Cargo.*' -o -name '*.java' \) 2>/dev/null | head -n 1)" ]; then
      stale=1; break
    fi
  done
  [ "$stale" = 1 ] || return 0
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (see README.md) to build PuyPuy"
  local packages=()
  for name in "$@"; do packages+=(-p "puypuy-$name"); done
  echo "building PuyPuy (cargo build --release ${packages[*]})…"
  (cd "$HERE" && cargo build --release --quiet "${packages[@]}") || die "cargo build failed"
}

# One puypuy.sh at a time changes what runs: two starts at once would each find no watchdog and
# start one. The lock sits beside the pid files, so it is per config. Only this shell holds fd 9:
# the watchdogs are started with it closed.
take_lock() {
  local file; file=$(lock_file)
  [ -d "$(dirname "$file")" ] || return 0
  exec 9>>"$file" || die "cannot open $file"
  flock -w "$LOCK_TIMEOUT" 9 || die "another puypuy.sh has held $file for ${LOCK_TIMEOUT}s"
}

# The watchdog: runs one process, restarts it with a short backoff when it dies, stops it on TERM.
watchdog() {
  local name=$1 bin child="" pid rc started backoff=0.2 restarts=0 stopping="" interrupted="" pause
  bin=$(binary_of "$name")
  echo 0 > "$(restarts_file "$name")"
  # child is set only while it is this shell's unreaped child: its pid cannot be anyone else's.
  trap 'stopping=1; interrupted=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT
  trap '' HUP
  # bash reports a child killed by a signal ("line N: PID Killed  …") on its own stderr whenever
  # it reaps it; the child writes to the log through its own redirection, this shell to nowhere.
  exec 2>/dev/null
  while [ -z "$stopping" ]; do
    started=$(date +%s)
    if [ "$(id -u)" = 0 ] && [ -n "$RUN_USER" ] && [ "$RUN_USER" != root ]; then
      setpriv --reuid="$RUN_USER" --regid="$(id -g "$RUN_USER")" --init-groups -- \
        "$bin" --config "$CONFIG" </dev/null >>"$LOG_FILE" 2>&1 &
    else
      "$bin" --config "$CONFIG" </dev/null >>"$LOG_FILE" 2>&1 &
    fi
    child=$!
    # A TERM since the loop's test found no child to pass on to: pass it now.
    [ -z "$stopping" ] || kill -TERM "$child" 2>/dev/null
    echo "$child" > "$(child_pidfile "$name")"
    # A trapped signal interrupts wait; wait again for the child itself (bash keeps its status).
    while :; do
      interrupted=""
      rc=0; wait "$child" || rc=$?
      [ -n "$interrupted" ] || break
    done
    pid=$child child=""
    [ -z "$stopping" ] || break
    if [ "$rc" = 2 ]; then
      log_line "$name exited with status 2 (invalid configuration); not restarting it"
      break
    fi
    restarts=$((restarts + 1))
    echo "$restarts" > "$(restarts_file "$name")"
    if [ $(( $(date +%s) - started )) -ge 30 ]; then backoff=0.2; fi
    log_line "$name (pid $pid) exited with status $rc; restarting in ${backoff}s (restart $restarts)"
    [ -z "$stopping" ] || break
    sleep "$backoff" & pause=$!
    wait "$pause"
    kill "$pause" 2>/dev/null
    case "$backoff" in 0.2) backoff=0.5 ;; 0.5) backoff=1 ;; 1) backoff=2 ;; *) backoff=3 ;; esac
  done
  rm -f "$(child_pidfile "$name")" "$(watchdog_pidfile "$name")"
  exit 0
}

start_one() {
  local name=$1 wpid
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  if ours "$name" "$wpid"; then echo "$name: already running (watchdog pid $wpid)"; return 0; fi
  # Check the config once in the foreground so that errors show here, not only in the log.
  local out rc=0
  out=$("$(binary_of "$name")" --config "$CONFIG" --check-config 2>&1) || rc=$?
  if [ "$rc" = 2 ]; then echo "$out" >&2; return 2; fi
  rm -f "$(child_pidfile "$name")"
  setsid "$0" _watchdog "$name" </dev/null >/dev/null 2>>"$LOG_FILE" 9>&- &
  echo $! > "$(watchdog_pidfile "$name")"
  # Wait until the process itself runs (the shipper: until its socket exists).
  local i cpid
  for i in $(seq 1 100); do
    cpid=$(read_pid "$(child_pidfile "$name")")
    if ours "$name" "$cpid"; then
      if [ "$name" != shipper ] || [ -S "$(shipper_socket)" ]; then
        echo "$name: started (pid $cpid)"; return 0
      fi
    fi
    ours "$name" "$(read_pid "$(watchdog_pidfile "$name")")" || break
    sleep 0.1
  done
  echo "$name: failed to start; see $LOG_FILE" >&2
  return 1
}

shipper_socket() {
  local v; v=$(ini_get SelfConfig socket)
  resolve "${v:-$TMPDIR_/shipper.sock}"
}

stop_one() {
  local name=$1 wpid cpid i
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  cpid=$(read_pid "$(child_pidfile "$name")")
  # A pid file left by a crash may name a pid the system has since given to another process.
  ours "$name" "$wpid" || wpid=""
  ours "$name" "$cpid" || cpid=""
  if [ -z "$wpid" ] && [ -z "$cpid" ]; then
    rm -f "$(watchdog_pidfile "$name")" "$(child_pidfile "$name")"
    echo "$name: not running"; return 0
  fi
  if [ -n "$wpid" ]; then kill -TERM "$wpid" 2>/dev/null; else kill -TERM "$cpid" 2>/dev/null; fi
  for i in $(seq 1 $((STOP_TIMEOUT * 10))); do
    ours "$name" "$wpid" || ours "$name" "$cpid" || break
    sleep 0.1
  done
  if ours "$name" "$wpid" || ours "$name" "$cpid"; then
    echo "$name: did not stop within ${STOP_TIMEOUT}s; killing it" >&2
    ours "$name" "$wpid" && kill -KILL "$wpid" 2>/dev/null
    ours "$name" "$cpid" && kill -KILL "$cpid" 2>/dev/null
  fi
  rm -f "$(watchdog_pidfile "$name")" "$(child_pidfile "$name")"
  echo "$name: stopped"
}

status_one() {
  local name=$1 wpid cpid up
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  cpid=$(read_pid "$(child_pidfile "$name")")
  if ours "$name" "$cpid"; then
    up=$(ps -o etime= -p "$cpid" | tr -d ' ')
    printf '%-14s running  pid %-7s uptime %-12s restarts %s\n' "$name" "$cpid" "$up" "$(cat "$(restarts_file "$name")" 2>/dev/null || echo 0)"
    return 0
  elif ours "$name" "$wpid"; then
    printf '%-14s restarting (watchdog pid %s, restarts %s)\n' "$name" "$wpid" "$(cat "$(restarts_file "$name")" 2>/dev/null || echo 0)"
    return 0
  elif [ -e "$(watchdog_pidfile "$name")" ] || [ -e "$(child_pidfile "$name")" ]; then
    printf '%-14s dead (stale pid file)\n' "$name"
    return 1
  else
    printf '%-14s stopped\n' "$name"
    return 3
  fi
}

prepare_dirs() {
  mkdir -p "$TMPDIR_" "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")" || die "cannot create $TMPDIR_"
  touch "$LOG_FILE" || die "cannot write $LOG_FILE"
  if [ "$(id -u)" = 0 ] && [ -n "$RUN_USER" ] && [ "$RUN_USER" != root ]; then
    id "$RUN_USER" >/dev/null 2>&1 || die "run_user $RUN_USER does not exist" 2
    chown -R "$RUN_USER" "$TMPDIR_" && chown "$RUN_USER" "$LOG_FILE"
  fi
}

reload_one() {
  local name=$1 cpid
  cpid=$(read_pid "$(child_pidfile "$name")")
  if ours "$name" "$cpid"; then
    kill -HUP "$cpid" && echo "$name: reloading (SIGHUP to pid $cpid)"
  else
    echo "$name: not running"
  fi
}

json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

status_json() {
  local n wpid cpid state up restarts first=1 status_file
  printf '{"config":"%s","processes":[' "$(json_escape "$CONFIG")"
  for n in "$@"; do
    wpid=$(read_pid "$(watchdog_pidfile "$n")"); cpid=$(read_pid "$(child_pidfile "$n")")
    restarts=$(cat "$(restarts_file "$n")" 2>/dev/null || echo 0)
    if ours "$n" "$cpid"; then state=running; up=$(ps -o etimes= -p "$cpid" | tr -d ' ')
    elif ours "$n" "$wpid"; then state=restarting; up=0; cpid=""
    else state=stopped; up=0; cpid=""; fi
    [ "$first" = 1 ] || printf ','
    first=0
    printf '{"name":"%s","state":"%s","pid":%s,"uptime_seconds":%s,"restarts":%s}' "$n" "$state" "${cpid:-null}" "${up:-0}" "${restarts:-0}"
  done
  status_file="$TMPDIR_/shipper-status.json"
  printf '],"shipper":'
  if [ -s "$status_file" ] && ours shipper "$(read_pid "$(child_pidfile shipper)")"; then cat "$status_file"; else printf 'null'; fi
  printf '}\n'
}

once_table() {
  local n out rc=0
  build_if_needed "$@"
  printf '%-12s %-44s %16s  %-5s %s\n' PROCESS METRIC VALUE STYLE TAGS
  for n in "$@"; do
    [ "$n" = shipper ] && continue
    out=$("$(binary_of "$n")" --config "$CONFIG" --once --dry-run 2>/dev/null) || rc=1
    printf '%s\n' "$out" | awk -v proc="$n" 'NF >= 3 {
      style = "stack"; last = NF
      if ($NF == "rate") { style = "rate"; last = NF - 1 }
      tags = ""
      for (i = 4; i <= last; i++) tags = tags (tags == "" ? "" : " ") $i
      printf "%-12s %-44s %16s  %-5s %s\n", proc, $1, $3, style, tags
    }'
  done
  return "$rc"
}

package() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust to build the package"
  (cd "$HERE" && cargo build --release --quiet --bins) || die "cargo build failed"
  local deb="$HERE/target/tools/bin/cargo-deb"
  if [ ! -x "$deb" ]; then
    echo "installing cargo-deb into target/tools…"
    cargo install --quiet --locked --root "$HERE/target/tools" cargo-deb || die "cannot install cargo-deb"
  fi
  mkdir -p "$HERE/target/debian"
  (cd "$HERE" && "$deb" --no-build --strip --quiet -p puypuy-shipper -o target/debian/) || die "cargo-deb failed"
  ls -1 "$HERE"/target/debian/*.deb
}

main() {
  local cmd=${1:-} target=${2:-} names=() rc=0 n json=0
  if [ "$cmd" = package ]; then package; exit $?; fi
  if [ "$target" = "--json" ]; then json=1; target=${3:-}; fi
  [ -n "$cmd" ] || die "usage: $0 start|stop|restart|status [shipper|collector|script-runner|jmx-bridge]" 2
  if [ "$cmd" != _watchdog ]; then
    [ -r "$CONFIG" ] || die "config file $CONFIG not found (set PUYPUY_CONFIG)" 6
  fi
  load_paths
  if [ -n "$target" ]; then
    case " ${ALL_PROCESSES[*]} " in *" $target "*) ;; *) die "unknown process $target (expected one of: ${ALL_PROCESSES[*]})" 2 ;; esac
    names=("$target")
  else
    for n in "${ALL_PROCESSES[@]}"; do configured "$n" && names+=("$n"); done
  fi
  case "$cmd" in
    _watchdog) watchdog "$target" ;;
    start)
      prepare_dirs
      build_if_needed "${names[@]}"
      take_lock
      for n in "${names[@]}"; do start_one "$n" || rc=$?; done
      exit "$rc" ;;
    stop)
      take_lock
      for ((i=${#names[@]}-1; i>=0; i--)); do stop_one "${names[$i]}"; done
      exit 0 ;;
    restart)
      take_lock
      for ((i=${#names[@]}-1; i>=0; i--)); do stop_one "${names[$i]}"; done
      prepare_dirs
      build_if_needed "${names[@]}"
      for n in "${names[@]}"; do start_one "$n" || rc=$?; done
      exit "$rc" ;;
    reload)
      take_lock
      for n in "${names[@]}"; do reload_one "$n"; done
      exit 0 ;;
    once)
      once_table "${names[@]}"; exit $? ;;
    check-config)
      build_if_needed shipper
      "$(binary_of shipper)" --config "$CONFIG" --check-config; exit $? ;;
    status)
      if [ "$json" = 1 ]; then status_json "${names[@]}"; fi
      local worst=0 s
      for n in "${names[@]}"; do
        s=0
        if [ "$json" = 1 ]; then status_one "$n" >/dev/null || s=$?; else status_one "$n" || s=$?; fi
        [ "$s" -gt "$worst" ] && worst=$s
      done
      exit "$worst" ;;
    *) die "unknown command $cmd (expected start, stop, restart, status, reload, once or check-config)" 2 ;;
  esac
}

main "$@"
