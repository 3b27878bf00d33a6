#!/usr/bin/env bash
# fleet.sh: what `cargo xtask deploy|rollback|status` run on each host of a rollout, over the
# system ssh as `bash -c <this script> fleet.sh <operation> ...`. It is not shipped: the host needs
# only what install.sh needs. The operations:
#   hold <env> <dest> <payload> [<sha256>]
#                                 take <dest>/saulpos-<env>/rollout.lock, print live=, previous=
#                                 and payload_sha256= (of the payload held there); with this
#                                 script's SHA-256, keep the script there for the rollout's
#                                 other operations and print script= (its path); then `ready`,
#                                 and keep the lock until standard input closes (after a
#                                 `done` line; without one, until the host's install ends)
#   install <env> <dest> <payload> <sha256> <copy> [install.sh options]
#                                 with copy=yes, write the payload from standard input (checked
#                                 against <sha256>, then renamed into place); unpack it beside
#                                 the payloads and run its install.sh
#   rollback <env> <dest> [rollback.sh options]
#                                 run the environment's rollback.sh, to its end even if the
#                                 session drops
#   probe <env> <dest> [url]      print live=, previous= and health= (UP, DOWN or no answer)
#   metrics <env> <dest> [url]    print the server's /actuator/prometheus (the canary analysis)
set -euo pipefail

ENV=''

# @COMMON@

usage() {
  cat <<'USAGE'
Usage: bash -c "$(cat fleet.sh)" fleet.sh hold|install|rollback|probe|metrics ...

What `cargo xtask deploy|rollback|status` run on each host of a rollout (see the top of this file
for the operations). Not for direct use: run `cargo xtask deploy --help`.
USAGE
}

# Keeps this script (run as bash -c) in $1 as .fleet-<sha256>.sh when its SHA-256 is $2, for the
# rollout's other operations to run without sending it again; prints script= (empty if not).
keep_script() {
  local dir="$1" sha="$2" part got='' kept="$1/.fleet-$2.sh" path
  [[ "$sha" =~ ^[0-9a-f]{64}$ && -n "${BASH_EXECUTION_STRING:-}" ]] || {
    printf 'script=\n'
    return 0
  }
  if [[ ! -f "$kept" ]]; then
    part="$dir/.fleet.sh.partial-$$"
    printf '%s' "$BASH_EXECUTION_STRING" >"$part" && read -r got _ < <(sha256sum -- "$part")
    if [[ "$got" == "$sha" ]]; then
      mv -f -- "$part" "$kept"
    else
      rm -f -- "$part"
      printf 'script=\n'
      return 0
    fi
  fi
  for path in "$dir"/.fleet-*.sh; do
    [[ "$path" == "$kept" ]] || rm -f -- "$path"
  done
  printf 'script=%s\n' "$kept"
}

hold() {
  ENV="$1"
  local dest="$2" payload="$3" script_sha="${4:-}" dir sum='' live
  [[ -d "$dest" ]] || err "$dest does not exist on $(uname -n); create it (e.g. sudo install -d -o \$USER $dest) and run again"
  dest="$(cd -- "$dest" && pwd -P)"
  check_destination "$dest"
  dir="$dest/saulpos-$ENV"
  mkdir -p -- "$dir/payloads"
  take_lock "$dir" "rollout" rollout.lock
  remove_partials "$dir/payloads"
  if [[ -n "$payload" && -f "$dir/payloads/$payload" ]]; then
    read -r sum _ < <(sha256sum -- "$dir/payloads/$payload")
  fi
  live="$(live_version "$dir")"
  keep_script "$dir" "$script_sha"
  printf 'live=%s\nprevious=%s\npayload_sha256=%s\nready\n' "$live" "$(previous_version "$dir" "$live")" "$sum"
  # Held until the rollout says `done` and closes this session, or dies (then ssh, or sshd,
  # closes it without a word). An install that a dead rollout started here may outlive it: the
  # lock is then kept until that one is done.
  local word finished=false
  while IFS= read -r word; do
    [[ "$word" == "done" ]] && finished=true
  done
  if [[ "$finished" == false ]]; then
    # First every operation that joined this rollout (join_rollout), then the install or
    # rollback one of them may have left running.
    exec 7>>"$dir/active.lock"
    flock -w 900 7 || true
    exec 8>>"$dir/deploy.lock"
    flock -w 900 8 || true
  fi
}

# Joins the rollout whose hold keeps <dir>/rollout.lock: a shared lock on active.lock (fd 7,
# kept to the end of this operation; the hold of a rollout that died waits for it), then a look
# at the hold's pid. A rollout that died before this started changes nothing.
join_rollout() {
  local dir="$1" line pid=''
  exec 7>>"$dir/active.lock"
  flock -s 7
  if [[ -f "$dir/rollout.lock" ]]; then
    while IFS= read -r line; do
      [[ "$line" == pid=* ]] && pid="${line#pid=}"
    done <"$dir/rollout.lock"
  fi
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    err "the rollout that asked for this has ended (no hold on $dir/rollout.lock); nothing was changed; run it again"
  fi
}

install_payload() {
  ENV="$1"
  local dest="$2" payload="$3" sum="$4" copy="$5" got stage status=0 path version
  shift 5
  local payloads="$dest/saulpos-$ENV/payloads"
  join_rollout "$dest/saulpos-$ENV"
  if [[ "$copy" == yes ]]; then
    local upload="$payloads/.$payload.partial-$$"
    if ! cat >"$upload"; then
      rm -f -- "$upload"
      err "cannot write $upload; check the free space under $dest"
    fi
    read -r got _ < <(sha256sum -- "$upload")
    if [[ "$got" != "$sum" ]]; then
      rm -f -- "$upload"
      err "the copy of $payload arrived damaged or cut short (SHA-256 $got, sent $sum); run the rollout again"
    fi
    mv -f -- "$upload" "$payloads/$payload"
  fi
  # Unpacked beside the payloads (a leftover of a killed run goes with the next hold).
  stage="$payloads/.unpacked.partial-$$"
  mkdir -- "$stage"
  if ! tar -xzf "$payloads/$payload" -C "$stage" --no-same-owner; then
    rm -rf -- "$stage"
    err "cannot unpack $payloads/$payload; check the free space under $dest"
  fi
  run_to_end "$payloads/.install.partial-$$.log" "$stage/${payload%.tar.gz}/install.sh" "$dest" "$@" ||
    status=$?
  rm -rf -- "$stage"
  # Payloads are kept as long as their release is: a re-run copies nothing.
  for path in "$payloads"/saulpos-"$ENV"-*.tar.gz; do
    [[ -f "$path" ]] || continue
    version="${path##*/saulpos-"$ENV"-}"
    version="${version%.tar.gz}"
    [[ -d "$dest/saulpos-$ENV/releases/$version" ]] || rm -f -- "$path"
  done
  return "$status"
}

# Runs a command with its output in the file $1, not in this session, and streams the file: if
# the rollout dies or its connection drops, the command (an install, a rollback, and their
# health gates) still runs to its end. Returns its status.
run_to_end() {
  local log="$1" pid status=0 line='' partial='' alive
  shift
  : >"$log"
  # The rollout's shared lock (fd 7) stays with this script: not with the server a gate starts.
  "$@" >>"$log" 2>&1 </dev/null 7>&- &
  pid=$!
  # Streams what the file gains with bash's own read, no process a round; whether the command
  # still runs is asked before each read, so the last read comes after it ended and no line it
  # wrote is lost (tail --pid lost the last one now and then). A pipe nobody writes to (fd 5)
  # makes the wait between rounds without a sleep process.
  exec 6<"$log" 5<> <(:)
  while :; do
    alive=false
    ! kill -0 "$pid" 2>/dev/null || alive=true
    while IFS= read -r line <&6; do
      printf '%s\n' "$partial$line"
      partial=''
    done
    # At the end of the file, read leaves the unfinished line in $line.
    partial+="$line"
    [[ "$alive" == true ]] || break
    read -r -t 0.05 -u 5 _ || true
  done
  [[ -z "$partial" ]] || printf '%s\n' "$partial"
  exec 6<&- 5>&-
  wait "$pid" || status=$?
  rm -f -- "$log"
  return "$status"
}

rollback_release() {
  ENV="$1"
  local dir="$2/saulpos-$1"
  shift 2
  join_rollout "$dir"
  run_to_end "$dir/payloads/.rollback.partial-$$.log" "$dir/rollback.sh" "$@"
}

probe() {
  ENV="$1"
  local dest="$2" dir live health='no answer'
  # shellcheck disable=SC2034 # read by health_url
  health_override="${3:-}"
  dir="$dest/saulpos-$ENV"
  [[ -d "$dir" ]] || err "$dir does not exist on $(uname -n): nothing of $ENV is installed there"
  live="$(live_version "$dir")"
  # shellcheck disable=SC2154 # http_get sets http_status and http_body
  if http_get "$(health_url "$dir")" /actuator/health 2>/dev/null; then
    health="DOWN ($http_status)"
    [[ "$http_status" == 200 && "$http_body" == *'"status":"UP"'* ]] && health=UP
  fi
  printf 'live=%s\nprevious=%s\nhealth=%s\n' "$live" "$(previous_version "$dir" "$live")" "$health"
}

metrics() {
  ENV="$1"
  local dest="$2" dir url
  # shellcheck disable=SC2034 # read by health_url
  health_override="${3:-}"
  dir="$dest/saulpos-$ENV"
  [[ -d "$dir" ]] || err "$dir does not exist on $(uname -n): nothing of $ENV is installed there"
  url="$(health_url "$dir")"
  http_get "$url" /actuator/prometheus 2>/dev/null || err "nothing answers at $url on $(uname -n)"
  # shellcheck disable=SC2154 # http_get sets http_status and http_body
  [[ "$http_status" == 200 ]] || err "$url/actuator/prometheus answered $http_status (SAULPOS_METRICS_ENABLED=false?)"
  printf '%s\n' "$http_body"
}

main() {
  local operation="${1:-}"
  (($# > 0)) && shift
  case "$operation" in
    hold) hold "$@" ;;
    install) install_payload "$@" ;;
    rollback) rollback_release "$@" ;;
    probe) probe "$@" ;;
    metrics) metrics "$@" ;;
    -h | --help) usage ;;
    *) err "unknown operation ${operation:-(none)}; see fleet.sh --help" ;;
  esac
}

main "$@"
