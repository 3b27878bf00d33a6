#!/usr/bin/env bash
# Starts saulpos-server for the @ENV@ environment: the release that `current` points at.
# Written by `cargo xtask deploy`; the next deploy overwrites edits. Configure it in
# saulpos.env beside this file (see saulpos.env.example) or in the environment.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
env_file="${SAULPOS_ENV_FILE:-$here/saulpos.env}"

if [[ -f "$env_file" ]]; then
  if [[ -n "$(find "$env_file" -maxdepth 0 -perm /044)" ]]; then
    echo "run.sh: warning: $env_file can be read by other users and holds the database password; run: chmod 600 $env_file" >&2
  fi
  set -a
  # shellcheck source=/dev/null
  source "$env_file"
  set +a
fi

required=(@REQUIRED@)
missing=()
for name in "${required[@]}"; do
  if [[ -z "${!name:-}" ]]; then
    missing+=("$name")
  fi
done
if ((${#missing[@]} > 0)); then
  echo "run.sh: the @ENV@ environment needs ${missing[*]}: set them in $env_file (see saulpos.env.example) or in the environment" >&2
  exit 2
fi

export SAULPOS_PROFILE=@ENV@
binary="$here/current/bin/saulpos-server"
if [[ ! -x "$binary" ]]; then
  echo "run.sh: no live release at $here/current; deploy one with: cargo xtask deploy @ENV@ <version> $(dirname -- "$here")" >&2
  exit 1
fi

# Under systemd the journal keeps the logs; started by hand, they go to logs/saulpos.log
# (set SAULPOS_LOG_FILE=- to keep them on the terminal).
if [[ -z "${INVOCATION_ID:-}" ]]; then
  log_file="${SAULPOS_LOG_FILE:-$here/logs/saulpos.log}"
  if [[ "$log_file" != "-" ]]; then
    mkdir -p -- "$(dirname -- "$log_file")"
    echo "run.sh: starting $("$binary" --version) (@ENV@); logs go to $log_file" >&2
    exec >>"$log_file" 2>&1
  fi
fi

# exec: the server takes this process's place, so SIGTERM reaches it directly.
exec "$binary" "$@"
