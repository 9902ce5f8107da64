#!/usr/bin/env bash
# puypuy.sh — start, stop, restart and report the PuyPuy processes, each under a watchdog that
# restarts it when it dies. `./puypuy.sh --help` lists the commands.
#
# PROCESS is shipper, collector, script-runner or jmx-bridge; without it a command acts on all
# that the config uses (shipper first on start, last on stop; the jmx-bridge only with a [JMX]
# section), and stop, restart and status also on any other that still runs. Binaries run in
# place from this checkout's target/release/, built with cargo when missing or older than the
# sources. What puypuy.sh needs from the config (paths, run_user, the JMX targets) it asks the
# binaries (--print-config), so that one parser reads the file. Exit codes follow the LSB
# init-script conventions (status: 0 running, 1 dead with a pid file left, 3 not running, 4
# unknown; 2 invalid arguments or config, 6 no config file).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
# Installed from the Debian package (/usr/share/puypuy): the config is in /etc, binaries in /usr/bin.
INSTALLED=0
if [ ! -f "$HERE/Cargo.toml" ] && [ -x /usr/bin/puypuy-shipper ]; then INSTALLED=1; fi
DEFAULT_CONFIG=$HERE/config.ini
[ "$INSTALLED" = 1 ] && DEFAULT_CONFIG=/etc/puypuy/config.ini
CONFIG=${PUYPUY_CONFIG:-$DEFAULT_CONFIG}
DEFAULT_BIN_DIR=$HERE/target/release
[ "$INSTALLED" = 1 ] && DEFAULT_BIN_DIR=/usr/bin
BIN_DIR=${PUYPUY_BIN_DIR:-$DEFAULT_BIN_DIR}
ALL_PROCESSES=(shipper collector script-runner jmx-bridge)
STOP_TIMEOUT=${PUYPUY_STOP_TIMEOUT:-30}
START_TIMEOUT=${PUYPUY_START_TIMEOUT:-30}
# Long enough for another puypuy.sh to stop every process and start them again.
LOCK_TIMEOUT=$((STOP_TIMEOUT * 5 + START_TIMEOUT * 4 + 60))

usage() {
  cat <<EOF
usage: puypuy.sh [--config FILE] COMMAND [PROCESS]

Commands:
  start [PROCESS]             build what is missing or stale, validate the config, start each
                              process under a watchdog that restarts it when it dies
  stop [PROCESS]              stop (the shipper last, once it has delivered what it holds)
  restart [PROCESS]           build and validate first; stop and start only when the config is
                              valid (otherwise print its errors, exit 2, leave the processes running)
  status [--json] [PROCESS]   state, pid, uptime and restarts; exit 0 running, 1 any dead (or
                              not restarted after an invalid config), 3 stopped; --json adds
                              the shipper's self-metrics
  reload [PROCESS]            validate the config, then SIGHUP: re-read it, reopen the log
  once [PROCESS]              run each producer once (--once --dry-run) and print what it would
                              send; nothing is sent
  check-config [--strict]     validate the config: exit 2 on errors, and with --strict on warnings
  package                     build the Debian package into target/debian/ (cargo-deb)
  help                        this text

PROCESS is shipper, collector, script-runner or jmx-bridge; without it, every one the config uses
(and for stop, restart and status any other still running).

Options:
  --config FILE, --config=FILE  the config file (default: \$PUYPUY_CONFIG, else $DEFAULT_CONFIG)
  -h, --help                    this text

Environment: PUYPUY_CONFIG, PUYPUY_BIN_DIR (prebuilt binaries instead of building them here),
PUYPUY_STOP_TIMEOUT (seconds stop waits before SIGKILL; 30), PUYPUY_START_TIMEOUT (seconds start
waits for each process to run; 30).
EOF
}

# die MESSAGE [EXIT_STATUS]
die() { echo "puypuy.sh: $1" >&2; exit "${2:-1}"; }

# An absolute path with its folder's symbolic links resolved, so that every way of naming the
# config gives the same string.
absolute() {
  local path=$1 dir
  case "$path" in /*) ;; *) path="$PWD/$path" ;; esac
  dir=$(cd "$(dirname "$path")" 2>/dev/null && pwd -P) || { echo "$path"; return; }
  echo "$dir/$(basename "$path")"
}

binary_of() { echo "$BIN_DIR/puypuy-$1"; }
child_pidfile() { echo "$PID_BASE.$1.pid"; }
watchdog_pidfile() { echo "$PID_BASE.$1.watchdog.pid"; }
restarts_file() { echo "$PID_BASE.$1.restarts"; }
lock_file() { echo "$PID_BASE.lock"; }
# Left by a watchdog that gave up (its process exited with status 2, an invalid config), so that
# status reports it instead of a clean "stopped"; removed by start and stop.
failed_file() { echo "$PID_BASE.$1.failed"; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -r "$1" ] && tr -dc '0-9' < "$1"; }
# live PID: the process exists and is not a zombie (a zombie's command line is empty).
live() { [ -n "${1:-}" ] && [ -n "$(tr -d '\0' 2>/dev/null < "/proc/$1/cmdline")" ]; }

# ours NAME PID: PID is this config's NAME process, its binary run as `puypuy-NAME --config
# CONFIG`, or its watchdog, `bash puypuy.sh --config CONFIG _watchdog NAME`: not a process that was
# given a recycled pid, not a debugger or editor with puypuy-NAME among its arguments, not another
# config's. The binary is recognised by its name (/proc/PID/exe), not its whole path: after a
# rebuild or a package upgrade the running one is "… (deleted)", and PUYPUY_BIN_DIR may differ
# between start and stop. A zombie (empty command line) is not ours.
ours() {
  local name=$1 pid=${2:-} args exe
  [ -n "$pid" ] || return 1
  mapfile -d '' -t args 2>/dev/null < "/proc/$pid/cmdline" || return 1
  if [ "${#args[@]}" = 3 ]; then
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    [ "${exe##*/}" = "puypuy-$name" ] && [ "${args[1]}" = --config ] && [ "${args[2]}" = "$CONFIG" ]
  elif [ "${#args[@]}" = 6 ]; then
    [ "${args[1]##*/}" = "${SELF##*/}" ] && [ "${args[2]}" = --config ] && [ "${args[3]}" = "$CONFIG" ] &&
      [ "${args[4]}" = _watchdog ] && [ "${args[5]}" = "$name" ]
  else
    return 1
  fi
}

# in_use NAME: a pid file of NAME names a live process of ours.
in_use() {
  ours "$1" "$(read_pid "$(watchdog_pidfile "$1")")" || ours "$1" "$(read_pid "$(child_pidfile "$1")")"
}

log_line() { echo "$(date -u +%Y-%m-%dT%H:%M:%S.000Z) INFO  puypuy.sh: $*" >> "$LOG_FILE"; }

# stale NAME: its binary is missing or older than the sources it is built from.
stale() {
  local bin; bin=$(binary_of "$1")
  [ -x "$bin" ] || return 0
  [ -n "$(find "$HERE/Cargo.toml" "$HERE/Cargo.lock" "$HERE/common" "$HERE/$1" \
               -newer "$bin" -type f \( -name '*.rs' -o -name 'Cargo.*' -o -name '*.java' \) 2>/dev/null | head -n 1)" ]
}

# builds_here: binaries are built from this checkout (not a package, not PUYPUY_BIN_DIR).
builds_here() { [ -z "${PUYPUY_BIN_DIR:-}" ] && [ "$INSTALLED" = 0 ]; }

build_if_needed() {
  local name packages=()
  if ! builds_here; then
    # Binaries from elsewhere (a package, a test build): use them as they are.
    for name in "$@"; do [ -x "$(binary_of "$name")" ] || die "$(binary_of "$name") is missing"; done
    return 0
  fi
  for name in "$@"; do stale "$name" && packages+=(-p "puypuy-$name"); done
  [ "${#packages[@]}" -gt 0 ] || return 0
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (see README.md) to build PuyPuy"
  echo "building PuyPuy (cargo build --release ${packages[*]})…"
  # cargo's progress on a terminal (a first build takes minutes); quiet in scripts and logs.
  local quiet=(--quiet)
  [ -t 1 ] && quiet=()
  (cd "$HERE" && cargo build --release "${quiet[@]}" "${packages[@]}") || die "cargo build failed"
}

# The [SelfConfig] values puypuy.sh needs, as the binaries resolve them (defaults applied,
# relative paths against the config's folder). jmx_targets comes last: a number, never an empty
# line that $(…) would drop.
CONFIG_KEYS=(tmpdir pid_file log_file socket run_user jmx_targets)

# The state file: start records there the settings it used (CONFIG_KEYS, as --print-config gave
# them), and stop and status read them back when the config can no longer be read (a syntax error
# in [SelfConfig] made since start), so that what runs can always be found and stopped. It has to
# be found without the config: one file per config path (a hash of it) and user, in /run/puypuy
# for root and in /tmp/puypuy-UID for anyone else; a full stop removes it.
state_dir() { if [ "$(id -u)" = 0 ]; then echo /run/puypuy; else echo "/tmp/puypuy-$(id -u)"; fi; }
state_file() { echo "$(state_dir)/$(printf '%s' "$CONFIG" | sha256sum | cut -c1-16).state"; }

# write_state: records CONFIG_VALUES for CONFIG. Written to a new file and renamed into place, in a
# folder of our own (not a link, not someone else's), so that nothing it names is overwritten.
write_state() {
  local dir file tmp i
  dir=$(state_dir); file=$(state_file)
  mkdir -p -m 700 "$dir" 2>/dev/null
  if [ -L "$dir" ] || [ ! -O "$dir" ]; then
    echo "puypuy.sh: $dir is not this user's folder: the paths in use are not recorded" >&2; return 0
  fi
  tmp=$(mktemp "$file.XXXXXX") || return 0
  {
    echo "# written by puypuy.sh start: the settings in use for this config, read back by stop and"
    echo "# status when the config cannot be read"
    echo "config=$CONFIG"
    for i in "${!CONFIG_KEYS[@]}"; do echo "${CONFIG_KEYS[$i]}=${CONFIG_VALUES[$i]}"; done
  } > "$tmp" && mv -f "$tmp" "$file" || rm -f "$tmp"
}

# read_state: sets CONFIG_VALUES from the state file of CONFIG; 1 when there is none of ours.
read_state() {
  local file line key value i found=""
  file=$(state_file)
  [ -f "$file" ] && [ ! -L "$file" ] && [ -O "$file" ] || return 1
  CONFIG_VALUES=()
  while IFS= read -r line; do
    key=${line%%=*} value=${line#*=}
    [ "$key" = config ] && { [ "$value" = "$CONFIG" ] || return 1; found=1; }
    for i in "${!CONFIG_KEYS[@]}"; do [ "$key" = "${CONFIG_KEYS[$i]}" ] && CONFIG_VALUES[$i]=$value; done
  done < "$file"
  [ -n "$found" ] && [ "${#CONFIG_VALUES[@]}" = "${#CONFIG_KEYS[@]}" ]
}

# load_config [NAME…]: reads CONFIG_KEYS with the first built binary of NAME… (else of any
# process). Returns 1 when no binary is built (then nothing can be running). When the file cannot
# be read, prints the binary's error; stop and status then go on with the settings start recorded
# (read_state), anything else exits 2 (status without a record: 4).
load_config() {
  local name bin="" out values=() rc=0 failed=2
  [ "$CMD" = status ] && failed=4
  for name in "$@" "${ALL_PROCESSES[@]}"; do
    if [ -x "$(binary_of "$name")" ]; then bin=$(binary_of "$name"); break; fi
  done
  [ -n "$bin" ] || return 1
  out=$("$bin" --config "$CONFIG" --print-config "${CONFIG_KEYS[@]}" 2>/dev/null) || rc=$?
  if [ "$rc" != 0 ] && builds_here && stale "${bin##*/puypuy-}"; then
    # A binary from before --print-config (or from older sources): build it and ask again.
    build_if_needed "${bin##*/puypuy-}"
    rc=0; out=$("$bin" --config "$CONFIG" --print-config "${CONFIG_KEYS[@]}" 2>/dev/null) || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    "$bin" --config "$CONFIG" --print-config "${CONFIG_KEYS[@]}" >/dev/null # its error, on stderr
    if { [ "$CMD" = stop ] || [ "$CMD" = status ]; } && read_state; then
      echo "puypuy.sh: cannot read $CONFIG: using the settings recorded at start in $(state_file)" >&2
      values=("${CONFIG_VALUES[@]}")
    else
      die "cannot read the settings puypuy.sh needs from $CONFIG" "$failed"
    fi
  else
    mapfile -t values <<< "$out"
    [ "${#values[@]}" = "${#CONFIG_KEYS[@]}" ] ||
      die "$bin --print-config ${CONFIG_KEYS[*]} gave ${#values[@]} lines instead of ${#CONFIG_KEYS[@]}" "$failed"
  fi
  CONFIG_VALUES=("${values[@]}")
  TMPDIR_=${values[0]}
  PID_FILE=${values[1]}
  LOG_FILE=${values[2]}
  SOCKET=${values[3]}
  RUN_USER=${values[4]}
  JMX_TARGETS=${values[5]}
  PID_BASE=${PID_FILE%.pid}
  CONFIG_BIN=$bin
}

# The processes a build of this checkout has, whatever the config says.
built_here() {
  printf '%s\n' shipper collector
  [ -d "$HERE/script-runner" ] || [ "$INSTALLED" = 1 ] && echo script-runner
  [ -d "$HERE/jmx-bridge" ] || [ "$INSTALLED" = 1 ] && echo jmx-bridge
}

# Which processes this config runs: the jmx-bridge only with a JMX target.
configured() {
  local n
  for n in $(built_here); do
    [ "$n" != jmx-bridge ] || [ "${JMX_TARGETS:-0}" -gt 0 ] && echo "$n"
  done
}

# acting_on: the processes stop, restart and status act on without a PROCESS: those the config
# runs, any other whose pid file names a live process of ours (the jmx-bridge after [JMX] was
# removed from the config) and, for status, any whose watchdog gave up on it.
acting_on() {
  local n wanted
  wanted=" $(configured | tr '\n' ' ') "
  for n in $(built_here); do
    if [[ "$wanted" == *" $n "* ]] || in_use "$n" || { [ "$CMD" = status ] && [ -s "$(failed_file "$n")" ]; }; then
      echo "$n"
    fi
  done
}

# check_config_or_exit [--quiet-warnings]: validates the whole config once (every binary checks
# every section) and prints its warnings; when it is invalid, prints the errors and exits 2
# before anything is changed.
check_config_or_exit() {
  local msgs rc=0
  msgs=$("$CONFIG_BIN" --config "$CONFIG" --check-config 2>&1 >/dev/null) || rc=$?
  if [ "$rc" != 0 ]; then
    [ -z "$msgs" ] || printf '%s\n' "$msgs" >&2
    die "$CONFIG is invalid: nothing was started, stopped or signalled" 2
  fi
  [ "${1:-}" = --quiet-warnings ] || [ -z "$msgs" ] || printf '%s\n' "$msgs" >&2
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
# Started by start_one with the paths in PUYPUY_WD_* (the config is not read again).
watchdog() {
  local name=$1 bin child="" pid rc started backoff=0.2 restarts=0 stopping="" interrupted="" pause
  LOG_FILE=$PUYPUY_WD_LOG_FILE PID_BASE=$PUYPUY_WD_PID_BASE RUN_USER=$PUYPUY_WD_RUN_USER
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
      echo "exited with status 2 (invalid configuration), not restarted" > "$(failed_file "$name")"
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
  local name=$1 wpid cpid
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  cpid=$(read_pid "$(child_pidfile "$name")")
  if ours "$name" "$wpid"; then echo "$name: already running (watchdog pid $wpid)"; return 0; fi
  # Its watchdog was killed (kill -9) but the process runs on: a second one must not be started.
  if ours "$name" "$cpid"; then
    echo "$name: already running (pid $cpid) without its watchdog, so nothing restarts it if it" \
      "dies: './puypuy.sh restart $name' puts it back under one" >&2
    return 1
  fi
  rm -f "$(child_pidfile "$name")" "$(failed_file "$name")"
  PUYPUY_WD_LOG_FILE=$LOG_FILE PUYPUY_WD_PID_BASE=$PID_BASE PUYPUY_WD_RUN_USER=$RUN_USER \
    setsid "$BASH" "$SELF" --config "$CONFIG" _watchdog "$name" </dev/null >/dev/null 2>>"$LOG_FILE" 9>&- &
  wpid=$!
  echo "$wpid" > "$(watchdog_pidfile "$name")"
  # Wait until the process itself runs (the shipper: until its socket exists), by the clock: on a
  # loaded machine each turn of this loop can take far longer than its sleep.
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ "$SECONDS" -le "$deadline" ]; do
    cpid=$(read_pid "$(child_pidfile "$name")")
    if ours "$name" "$cpid"; then
      if [ "$name" != shipper ] || [ -S "$SOCKET" ]; then
        echo "$name: started (pid $cpid)"; return 0
      fi
    fi
    # Not `ours`: until setsid has run bash on this script, the watchdog's command line is another.
    live "$wpid" || break
    sleep 0.1
  done
  local why="not running after ${START_TIMEOUT}s (PUYPUY_START_TIMEOUT)"
  live "$wpid" || why="its watchdog exited"
  echo "$name: failed to start: $why; the end of $LOG_FILE:" >&2
  tail -n 8 "$LOG_FILE" 2>/dev/null | sed 's/^/  /' >&2
  return 1
}

stop_one() {
  local name=$1 wpid cpid i
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  cpid=$(read_pid "$(child_pidfile "$name")")
  # A pid file left by a crash may name a pid the system has since given to another process.
  ours "$name" "$wpid" || wpid=""
  ours "$name" "$cpid" || cpid=""
  if [ -z "$wpid" ] && [ -z "$cpid" ]; then
    rm -f "$(watchdog_pidfile "$name")" "$(child_pidfile "$name")" "$(failed_file "$name")"
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
  rm -f "$(watchdog_pidfile "$name")" "$(child_pidfile "$name")" "$(failed_file "$name")"
  echo "$name: stopped"
}

restarts_of() { cat "$(restarts_file "$1")" 2>/dev/null || echo 0; }

status_one() {
  local name=$1 wpid cpid up
  wpid=$(read_pid "$(watchdog_pidfile "$name")")
  cpid=$(read_pid "$(child_pidfile "$name")")
  if ours "$name" "$cpid"; then
    up=$(ps -o etime= -p "$cpid" | tr -d ' ')
    printf '%-14s running  pid %-7s uptime %-12s restarts %s' "$name" "$cpid" "$up" "$(restarts_of "$name")"
    ours "$name" "$wpid" || printf ' (its watchdog is gone: restart it)'
    printf '\n'
    return 0
  elif ours "$name" "$wpid"; then
    printf '%-14s restarting (watchdog pid %s, restarts %s)\n' "$name" "$wpid" "$(restarts_of "$name")"
    return 0
  elif [ -s "$(failed_file "$name")" ]; then
    printf '%-14s %s; see %s\n' "$name" "$(head -n 1 "$(failed_file "$name")")" "$LOG_FILE"
    return 1
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

# fresh_status PID FILE: asks the shipper PID for its status file now (SIGUSR1: with self_metrics
# off it writes none on a timer) and waits up to 2 s for FILE to be replaced (a new inode). Only
# once FILE is that shipper's own: it writes it after its handler is in place, and SIGUSR1 before
# would end it (a socket left by a shipper killed with -9 says nothing about the new one).
fresh_status() {
  local before i
  grep -q "\"pid\":$1[,}]" "$2" 2>/dev/null || return 0
  before=$(stat -c %i "$2" 2>/dev/null)
  kill -USR1 "$1" 2>/dev/null || return 0
  for i in $(seq 1 20); do
    [ "$(stat -c %i "$2" 2>/dev/null)" != "$before" ] && return 0
    sleep 0.1
  done
}

json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

status_json() {
  local n wpid cpid state up restarts first=1 status_file
  printf '{"config":"%s","processes":[' "$(json_escape "$CONFIG")"
  for n in "$@"; do
    wpid=$(read_pid "$(watchdog_pidfile "$n")"); cpid=$(read_pid "$(child_pidfile "$n")")
    restarts=$(restarts_of "$n")
    if ours "$n" "$cpid"; then state=running; up=$(ps -o etimes= -p "$cpid" | tr -d ' ')
    elif ours "$n" "$wpid"; then state=restarting; up=0; cpid=""
    elif [ -s "$(failed_file "$n")" ]; then state=failed; up=0; cpid=""
    else state=stopped; up=0; cpid=""; fi
    [ "$first" = 1 ] || printf ','
    first=0
    printf '{"name":"%s","state":"%s","pid":%s,"uptime_seconds":%s,"restarts":%s}' "$n" "$state" "${cpid:-null}" "${up:-0}" "${restarts:-0}"
  done
  status_file="$TMPDIR_/shipper-status.json"
  cpid=$(read_pid "$(child_pidfile shipper)")
  ! ours shipper "$cpid" || fresh_status "$cpid" "$status_file"
  printf '],"shipper":'
  if [ -s "$status_file" ] && ours shipper "$(read_pid "$(child_pidfile shipper)")"; then cat "$status_file"; else printf 'null'; fi
  printf '}\n'
}

# Each producer once with --once --dry-run, as a table. Their stderr (errors, warnings) comes
# through; a producer that fails makes the exit status non-zero.
once_table() {
  local n out code rc=0 rows table=""
  for n in "$@"; do
    [ "$n" = shipper ] && continue
    code=0
    out=$("$(binary_of "$n")" --config "$CONFIG" --once --dry-run) || code=$?
    rows=$(printf '%s\n' "$out" | awk -v proc="$n" 'NF >= 3 {
      style = "stack"; last = NF
      if ($NF == "rate") { style = "rate*"; last = NF - 1 }
      tags = ""
      for (i = 4; i <= last; i++) tags = tags (tags == "" ? "" : " ") $i
      printf "%-12s %-44s %16s  %-5s %s\n", proc, $1, $3, style, tags
    }')
    [ -z "$rows" ] || table+="$rows"$'\n'
    if [ "$code" != 0 ]; then
      echo "puypuy.sh: puypuy-$n --once --dry-run failed (exit status $code)" >&2
      rc=$code
    fi
  done
  printf '%-12s %-44s %16s  %-5s %s\n' PROCESS METRIC VALUE STYLE TAGS
  printf '%s' "$table"
  case "$table" in *" rate* "*)
    echo "* rate: first sample, no point yet. VALUE is the counter's reading; the shipper sends its"
    echo "  per-second rate from the second reading on, so one --once run sends nothing for it." ;;
  esac
  return "$rc"
}

package() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust to build the package"
  local quiet=(--quiet)
  [ -t 1 ] && quiet=()
  (cd "$HERE" && cargo build --release "${quiet[@]}" --bins) || die "cargo build failed"
  local deb="$HERE/target/tools/bin/cargo-deb"
  if [ ! -x "$deb" ]; then
    echo "installing cargo-deb into target/tools…"
    cargo install "${quiet[@]}" --locked --root "$HERE/target/tools" cargo-deb || die "cannot install cargo-deb"
  fi
  mkdir -p "$HERE/target/debian"
  (cd "$HERE" && "$deb" --no-build --strip --quiet -p puypuy-shipper -o target/debian/) || die "cargo-deb failed"
  ls -1 "$HERE"/target/debian/*.deb
}

# prepare [PROCESS]: builds what the command needs and reads the config: without PROCESS, the
# processes every config runs first, then the jmx-bridge when the config has JMX targets. Sets
# NAMES.
prepare() {
  local target=$1 base=() n
  if [ -n "$target" ]; then
    build_if_needed "$target"
    load_config "$target"
    NAMES=("$target")
  else
    for n in $(built_here); do [ "$n" = jmx-bridge ] || base+=("$n"); done
    build_if_needed "${base[@]}"
    load_config "${base[@]}"
    mapfile -t NAMES < <(configured)
    build_if_needed "${NAMES[@]}"
  fi
}

main() {
  local target="" json=0 strict=0 rc=0 n i arg stopping=()
  CMD=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --config) [ $# -ge 2 ] || die "--config needs a file" 2; CONFIG=$2; shift 2 ;;
      --config=*) CONFIG=${1#--config=}; shift ;;
      -h|--help) usage; exit 0 ;;
      -*) usage >&2; die "unknown option $1" 2 ;;
      *) break ;;
    esac
  done
  CMD=${1:-}
  [ $# -gt 0 ] && shift
  case "$CMD" in
    help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
    start|stop|restart|status|reload|once|check-config|package|_watchdog) ;;
    *) usage >&2; die "unknown command $CMD" 2 ;;
  esac
  for arg in "$@"; do
    case "$arg" in
      -h|--help) usage; exit 0 ;;
      --json) [ "$CMD" = status ] || die "--json goes with status" 2; json=1 ;;
      --strict) [ "$CMD" = check-config ] || die "--strict goes with check-config" 2; strict=1 ;;
      -*) usage >&2; die "unknown option $arg" 2 ;;
      *)
        [ -z "$target" ] || die "one process at most (got $target and $arg)" 2
        target=$arg ;;
    esac
  done
  if [ -n "$target" ]; then
    case "$CMD" in check-config|package) die "$CMD takes no process" 2 ;; esac
    case " ${ALL_PROCESSES[*]} " in
      *" $target "*) ;;
      *) die "unknown process $target (expected one of: ${ALL_PROCESSES[*]})" 2 ;;
    esac
  fi
  if [ "$CMD" = package ]; then package; exit $?; fi
  CONFIG=$(absolute "$CONFIG")
  [ -r "$CONFIG" ] || die "config file $CONFIG not found (set PUYPUY_CONFIG or pass --config FILE)" 6
  NAMES=()
  case "$CMD" in
    _watchdog) watchdog "$target" ;;
    start)
      prepare "$target"
      check_config_or_exit
      prepare_dirs
      take_lock
      write_state
      for n in "${NAMES[@]}"; do start_one "$n" || rc=$?; done
      exit "$rc" ;;
    restart)
      # Everything that can fail is done before anything is stopped.
      prepare "$target"
      check_config_or_exit
      prepare_dirs
      take_lock
      write_state
      if [ -n "$target" ]; then stopping=("$target"); else mapfile -t stopping < <(acting_on); fi
      for ((i = ${#stopping[@]} - 1; i >= 0; i--)); do stop_one "${stopping[$i]}"; done
      for n in "${NAMES[@]}"; do start_one "$n" || rc=$?; done
      exit "$rc" ;;
    reload)
      # The binaries as they are: those that run, and that will read the config on SIGHUP.
      if ! load_config "$target"; then echo "nothing is built here: nothing runs"; exit 0; fi
      if [ -n "$target" ]; then NAMES=("$target"); else mapfile -t NAMES < <(configured); fi
      check_config_or_exit
      take_lock
      for n in "${NAMES[@]}"; do reload_one "$n"; done
      exit 0 ;;
    stop|status)
      # No build: a checkout never built has nothing running.
      if load_config "$target"; then
        if [ -n "$target" ]; then NAMES=("$target"); else mapfile -t NAMES < <(acting_on); fi
      else
        if [ -n "$target" ]; then NAMES=("$target"); else mapfile -t NAMES < <(built_here | grep -vx jmx-bridge); fi
        if [ "$CMD" = stop ]; then
          for n in "${NAMES[@]}"; do echo "$n: not running"; done
          exit 0
        fi
        if [ "$json" = 1 ]; then
          printf '{"config":"%s","processes":[' "$(json_escape "$CONFIG")"
          i=0
          for n in "${NAMES[@]}"; do
            [ "$i" = 0 ] || printf ','
            i=1
            printf '{"name":"%s","state":"stopped","pid":null,"uptime_seconds":0,"restarts":0}' "$n"
          done
          printf '],"shipper":null}\n'
        else
          for n in "${NAMES[@]}"; do printf '%-14s stopped (not built)\n' "$n"; done
        fi
        exit 3
      fi
      if [ "$CMD" = stop ]; then
        take_lock
        for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do stop_one "${NAMES[$i]}"; done
        [ -n "$target" ] || rm -f "$(state_file)"
        exit 0
      fi
      [ "$json" = 0 ] || status_json "${NAMES[@]}"
      # LSB: 1 (dead) when any process is dead, else the highest (3 when one is stopped).
      local worst=0 dead="" s
      for n in "${NAMES[@]}"; do
        s=0
        if [ "$json" = 1 ]; then status_one "$n" >/dev/null || s=$?; else status_one "$n" || s=$?; fi
        [ "$s" = 1 ] && dead=1
        [ "$s" -gt "$worst" ] && worst=$s
      done
      [ -z "$dead" ] || worst=1
      exit "$worst" ;;
    once)
      prepare "$target"
      # The producers print the warnings themselves.
      check_config_or_exit --quiet-warnings
      once_table "${NAMES[@]}"; exit $? ;;
    check-config)
      build_if_needed shipper
      if [ "$strict" = 1 ]; then
        "$(binary_of shipper)" --config "$CONFIG" --check-config --strict
      else
        "$(binary_of shipper)" --config "$CONFIG" --check-config
      fi
      exit $? ;;
  esac
}

main "$@"
