#!/usr/bin/env bash
# run.sh: runs saulpos-server for the @ENV@ environment: the release that `current` points at.
# Written by install.sh and `cargo xtask deploy`; the next install overwrites edits. Configure it
# in saulpos.env beside this file (see saulpos.env.example) or in the environment; under systemd
# the unit's EnvironmentFile= reads saulpos.env.
set -euo pipefail

# This script's folder, however it was started (a symlink, a relative path, from any folder).
self="$(readlink -f -- "${BASH_SOURCE[0]}")"
here="$(cd -- "${self%/*}" && pwd -P)"
env_file="${SAULPOS_ENV_FILE:-$here/saulpos.env}"
pid_file="$here/saulpos.pid"
log_file="${SAULPOS_LOG_FILE:-$here/logs/saulpos.log}"

# @ENV_FILE@

usage() {
  cat <<'USAGE'
Usage: ./run.sh [run] [server options]
       ./run.sh start|stop|restart|status
       ./run.sh user add|passwd|disable|list [options]

Run saulpos-server (the live release under current/) for the @ENV@ environment, with the
variables of saulpos.env beside this file (or SAULPOS_ENV_FILE).

  run       in the foreground (the default; what systemd runs). Started by hand, its logs go to
            logs/saulpos.log and to the terminal (SAULPOS_LOG_FILE=- for the terminal only);
            under systemd they go to the journal. Stop it with Ctrl-C or SIGTERM.
  start     in the background, for hosts without systemd: pid in saulpos.pid, logs appended to
            logs/saulpos.log. Waits until it listens (SAULPOS_START_TIMEOUT_SECONDS, default 60);
            fails, showing the end of the log, if it exits instead.
  stop      SIGTERM, then wait for requests in flight to finish (SAULPOS_STOP_TIMEOUT_SECONDS,
            default 30) before SIGKILL.
  restart   stop if running, then start.
  status    running (exit 0), not running (exit 3), or a stale pid file (exit 1).
  user      manage the users who log in, in this environment's database (saulpos-server user
            --help): e.g. `./run.sh user add smoke --role cashier < password-file`. A password
            is asked for at a terminal, or read from standard input; never an argument.
USAGE
}

say() {
  printf 'run.sh: %s\n' "$*" >&2
}

# Creates the log file $1 readable by its owner only (it may hold what a server printed).
private_log() {
  mkdir -p -- "$(dirname -- "$1")"
  (umask 077 && : >>"$1")
  chmod 600 -- "$1" 2>/dev/null || true
}

# The server's pid if it runs from this folder; fails otherwise (no pid file, or a stale one).
# Whether the process $1 lives: an exited one that its parent has not reaped yet (a zombie, as
# under a container's init that reaps late) does not.
alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  IFS= read -r stat <"/proc/$1/stat" 2>/dev/null || return 0
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

running_pid() {
  local pid command_line
  [[ -f "$pid_file" ]] || return 1
  read -r pid <"$pid_file" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  command_line="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  [[ "$command_line" == *"$here/"* || "$command_line" == *saulpos-server* ]] || return 1
  printf '%s' "$pid"
}

# The version the process $1 runs, from the binary the kernel started (/proc/<pid>/exe, not the
# `current` link, which an install may have moved since); empty when it cannot be read.
running_version() {
  local exe
  exe="$(readlink -- "/proc/$1/exe" 2>/dev/null || true)"
  [[ "$exe" == "$here/releases/"*/bin/saulpos-server* ]] || return 0
  exe="${exe#"$here/releases/"}"
  printf '%s' "${exe%%/*}"
}

# The version `current` points at.
live_version() {
  local target
  target="$(readlink -- "$here/current" 2>/dev/null || true)"
  printf '%s' "${target##*/}"
}

status() {
  local pid running live
  live="$(live_version)"
  if pid="$(running_pid)"; then
    running="$(running_version "$pid")"
    if [[ -z "$running" ]]; then
      say "running (pid $pid); which release it runs cannot be read from /proc/$pid/exe (run status as the server's user); live: ${live:-none}"
    elif [[ "$running" == "$live" ]]; then
      say "running (pid $pid): $running (releases/$running, the live release)"
    else
      say "running (pid $pid): $running; ${live:-no release} is installed but not running: $here/run.sh restart"
    fi
    return 0
  fi
  if [[ -f "$pid_file" ]]; then
    say "not running (stale pid file $pid_file, process $(head -c 20 -- "$pid_file") is gone); live: ${live:-none}"
    return 1
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "saulpos-@ENV@" 2>/dev/null; then
    say "not started by run.sh; systemd runs it: systemctl status saulpos-@ENV@; live: ${live:-none}"
    return 0
  fi
  say "not running; live: ${live:-none} (start it: $here/run.sh start)"
  return 3
}

start() {
  local pid size waited=0 limit="${SAULPOS_START_TIMEOUT_SECONDS:-60}" fresh
  if pid="$(running_pid)"; then
    say "already running (pid $pid)"
    return 0
  fi
  [[ ! -f "$pid_file" ]] || say "removing the stale pid file $pid_file"
  rm -f -- "$pid_file"
  [[ "$log_file" != "-" ]] || log_file="$here/logs/saulpos.log"
  private_log "$log_file"
  size="$(stat -c %s -- "$log_file" 2>/dev/null || echo 0)"
  # A session of its own, so a closed terminal does not stop it; its output is already the log.
  SAULPOS_LOG_FILE=- nohup setsid "$here/run.sh" run >>"$log_file" 2>&1 </dev/null &
  pid=$!
  printf '%s\n' "$pid" >"$pid_file.partial"
  mv -f -- "$pid_file.partial" "$pid_file"
  # Wait until it listens, or says why it cannot.
  while ((waited < limit * 10)); do
    if ! alive "$pid"; then
      rm -f -- "$pid_file"
      say "saulpos-server exited at once; the end of $log_file:"
      tail -c +"$((size + 1))" -- "$log_file" | tail -n 20 >&2 || true
      return 1
    fi
    fresh="$(tail -c +"$((size + 1))" -- "$log_file" 2>/dev/null || true)"
    if [[ "$fresh" =~ listening\ on\ (http://[^[:space:]]+) ]]; then
      say "started (pid $pid): $(live_version), listening on ${BASH_REMATCH[1]}; logs go to $log_file"
      return 0
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  say "started (pid $pid), not listening yet after $limit s; logs go to $log_file"
}

stop() {
  local pid waited=0 limit="${SAULPOS_STOP_TIMEOUT_SECONDS:-30}"
  if ! pid="$(running_pid)"; then
    [[ ! -f "$pid_file" ]] || say "removing the stale pid file $pid_file"
    rm -f -- "$pid_file"
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  while alive "$pid"; do
    if ((waited >= limit * 10)); then
      say "pid $pid did not stop within $limit s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f -- "$pid_file"
  say "stopped (pid $pid)"
}

# Reads saulpos.env, checks the variables the environment needs, and sets the profile.
load_env() {
  if [[ -r "$env_file" ]]; then
    if [[ -z "${INVOCATION_ID:-}" ]] && (((8#$(stat -c %a -- "$env_file") & 8#044) != 0)); then
      say "warning: $env_file can be read by other users and holds the database password; run: chmod 600 $env_file"
    fi
    # Read literally, never run: a value holding $(...) or a space is taken as it is.
    export_env_file "$env_file"
  elif [[ -e "$env_file" && -z "${INVOCATION_ID:-}" ]]; then
    say "cannot read $env_file; run as its owner (or through systemd, which reads it for the service)"
    exit 2
  fi

  local required=(@REQUIRED@) missing=() name
  for name in "${required[@]}"; do
    [[ -n "${!name:-}" ]] || missing+=("$name")
  done
  if ((${#missing[@]} > 0)); then
    say "the @ENV@ environment needs ${missing[*]}: set them in $env_file (see saulpos.env.example) or in the environment"
    exit 2
  fi

  export SAULPOS_PROFILE=@ENV@
  binary="$here/current/bin/saulpos-server"
  if [[ ! -x "$binary" ]]; then
    say "no live release at $here/current; install one with install.sh from a payload, or: cargo xtask deploy @ENV@ <version> $(dirname -- "$here")"
    exit 1
  fi
}

run() {
  load_env

  # Under systemd the journal keeps the logs; started by hand, they go to logs/saulpos.log and
  # to the terminal, so a server that cannot start says why where it was started.
  if [[ -z "${INVOCATION_ID:-}" && "$log_file" != "-" ]]; then
    private_log "$log_file"
    say "starting $("$binary" --version) (@ENV@); logs go to $log_file"
    exec > >(tee -p -a -- "$log_file") 2>&1
  fi

  # Started by hand in the foreground, it is still the server status, stop and restart see:
  # exec keeps this pid. (systemd keeps its own.)
  if [[ -z "${INVOCATION_ID:-}" ]] && ! running_pid >/dev/null; then
    printf '%s\n' "$$" >"$pid_file.partial-$$"
    mv -f -- "$pid_file.partial-$$" "$pid_file"
  fi
  # exec: the server takes this process's place, so SIGTERM reaches it directly.
  exec "$binary" "$@"
}

case "${1:-run}" in
  -h | --help) usage ;;
  start | stop | restart | status)
    (($# == 1)) || { say "$1 takes no more arguments; see ./run.sh --help"; exit 2; }
    case "$1" in
      start) start ;;
      stop) stop ;;
      restart) stop && start ;;
      status) status ;;
    esac
    ;;
  user) load_env; exec "$binary" "$@" ;;
  run) shift || true; run "$@" ;;
  *) run "$@" ;;
esac
