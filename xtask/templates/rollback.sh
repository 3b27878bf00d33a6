#!/usr/bin/env bash
# rollback.sh: switches the @ENV@ environment back to the release before the live one (or the one
# named), after re-verifying its files, as `cargo xtask rollback @ENV@ <dest>` would. Installed
# beside run.sh by install.sh and `cargo xtask deploy`; needs bash, coreutils and util-linux.
set -euo pipefail

ENV="@ENV@"
# The database of saulpos.env, once read_database has read it.
db_host='' db_port='' db_name='' db_user=''

# @COMMON@

usage() {
  cat <<EOF
Usage: ./rollback.sh [--to VERSION] [--reason TEXT] [--restart]

Switch the $ENV environment of this folder back to the release live before the current one (or
to VERSION), after re-verifying every file of that release against its manifest; record it in
history.log. The data stays as it is: restore a backup separately if the schema must go back.

Options:
  --to VERSION      the kept release to go back to (default: the one live before)
  --reason TEXT     why, for the history (e.g. the incident number)
  --allowed-signers FILE
                    require a valid signature of that release by a key in FILE; by default
                    allowed_signers in the folder above this one, when it exists
  --check           check that the release can be gone back to (kept, signed when required,
                    every file as its manifest says), then stop without switching
  --restart         after the switch, restart the service (systemctl where the unit is active,
                    else run.sh restart) and wait until health is UP with that version and the
                    smoke checks pass; fails, saying why, if not
  --restart-command COMMAND
                    with --restart: the command that restarts the service (sh, in this folder)
  --health-timeout DURATION
                    with --restart: how long the release may take to be UP: 60s, 2m or
                    plain seconds (default 60s)
  --health-url URL  with --restart: where the server answers, http://host:port (default
                    http://127.0.0.1:<SAULPOS_SERVER_PORT of saulpos.env, else 8080>)
  -h, --help        print this help
EOF
}

main() {
  local to='' reason='' live target kept url allowed_signers='' sums line name
  local restart=false restart_command='' health_timeout=60 check_only=false
  signer=''
  # shellcheck disable=SC2034 # read by health_url (common.sh)
  health_override=''
  while (($# > 0)); do
    case "$1" in
      -h | --help) usage; return 0 ;;
      --to) (($# >= 2)) || err "--to needs a version, e.g. --to 1.4.2"; to="$2"; shift 2 ;;
      --to=*) to="${1#--to=}"; shift ;;
      --reason) (($# >= 2)) || err "--reason needs a text, e.g. --reason 'INC-42'"; reason="$2"; shift 2 ;;
      --reason=*) reason="${1#--reason=}"; shift ;;
      --allowed-signers) (($# >= 2)) || err "--allowed-signers needs a file"; allowed_signers="$2"; shift 2 ;;
      --allowed-signers=*) allowed_signers="${1#--allowed-signers=}"; shift ;;
      --check) check_only=true; shift ;;
      --restart | --restart-command | --health-timeout | --health-url) gate_option "$@"; shift "$REPLY" ;;
      *) err "unknown argument $1; see ./rollback.sh --help" ;;
    esac
  done
  check_gate_options
  need_cmd sha256sum flock sort paste stat readlink mv ln id sync
  local dir
  dir="$(script_dir)"
  [[ -d "$dir/releases" ]] || err "$dir holds no releases; install one with install.sh first"
  take_lock "$dir" "rollback"
  live="$(live_version "$dir")"
  kept="$(kept_versions "$dir" | paste -sd, -)"
  kept="${kept//,/, }"
  if [[ -n "$to" ]]; then
    [[ "$to" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$ ]] ||
      err "invalid release version \"$to\"; give all three numbers, e.g. 2.0.0"
    [[ -d "$dir/releases/$to" ]] || err "release $to is not kept in $dir/releases; kept releases: $kept"
    target="$to"
  else
    target="$(previous_version "$dir")"
    [[ -n "$target" ]] ||
      err "no release before ${live:-none} is recorded in $dir; name one with --to (kept releases: $kept)"
  fi
  [[ "$target" != "$live" ]] || err "$target is already the live release of $ENV; nothing to do"
  if [[ -n "$allowed_signers" ]]; then
    [[ -f "$allowed_signers" ]] || err "--allowed-signers $allowed_signers does not exist; give the allowed_signers file"
  elif [[ -f "${dir%/*}/allowed_signers" ]]; then
    allowed_signers="${dir%/*}/allowed_signers"
  fi
  if [[ -n "$allowed_signers" ]]; then
    verify_signature "$dir/releases/$target/SHA256SUMS" "$dir/releases/$target/SHA256SUMS.sig" "$allowed_signers" ||
      err "refused: release $target's signature does not check out against $allowed_signers; the live release is unchanged"
    # The signed list vouches for the manifests, which vouch for every file.
    sums=$'\n'"$(<"$dir/releases/$target/SHA256SUMS")"$'\n'
    for name in manifest.txt manifest.json; do
      line="$(cd -- "$dir/releases/$target" && sha256sum -- "$name")"
      [[ "$sums" == *$'\n'"$line"$'\n'* ]] ||
        err "refused: release $target's $name is not the one its signed SHA256SUMS lists; the live release is unchanged"
    done
    say "signature: $signer"
  else
    say "signatures were not checked: no ${dir%/*}/allowed_signers (or --allowed-signers)"
  fi
  check_release "$dir/releases/$target" "saulpos-server-$target" ||
    err "refused: $dir/releases/$target no longer matches its manifest; the live release is unchanged; install $target again from its payload"
  if [[ "$check_only" == true ]]; then
    say "release $target checks out (files re-verified); nothing was switched (--check)"
    return 0
  fi
  # Forward when the target is the newer release (back to it after a rollback).
  local direction=back newest
  newest="$(printf '%s\n%s\n' "$live" "$target" | sort -V | tail -n 1)"
  [[ -z "$live" || "$newest" != "$target" ]] || direction=forward
  # Whether `cargo xtask rollback --with-data` put the data of $target back just before this.
  local restored=false last=''
  [[ ! -f "$dir/history.log" ]] || last="$(tail -n 1 -- "$dir/history.log")"
  [[ "$last" == '{"action":"restore",'* && "$last" == *"\"from\":\"$live\""* && "$last" == *"\"to\":\"$target\""* ]] && restored=true
  switch_to "$dir" "$target"
  record "$dir" rollback "$live" "$target" "$reason"
  url="$(health_url "$dir")"
  say "rolled $ENV $direction from ${live:-none} to $target (files re-verified)"
  if [[ "$restart" == true ]]; then
    gate "$dir" "$target" "$restart_command" "$health_timeout" ||
      err "$target is live again but failed its health gate at $url; see the problems above"
    data_steps "$dir" "$live" "$target" "$restored" "$url"
    return 0
  fi
  start_hint "$dir"
  say "next: restart the server to run $target, then check it:
  \$ $REPLY
  \$ curl -sSf $url/actuator/health"
  data_steps "$dir" "$live" "$target" "$restored" "$url"
}

# What to say of the data after a switch from $2 to $3: that it went back already, or the
# commands that put back the backup taken before $2 was deployed (the data of $3), with its
# real paths; nothing when there is none (a roll forward, or no backup taken).
data_steps() {
  local dir="$1" live="$2" target="$3" restored="$4" url="$5" line file='' index
  local -a lines=()
  if [[ "$restored" == true ]]; then
    say "the data of $target is back too: it was restored before the switch"
    return 0
  fi
  [[ -n "$live" && -f "$dir/history.log" ]] || return 0
  mapfile -t lines <"$dir/history.log"
  for ((index = ${#lines[@]} - 1; index >= 0; index--)); do
    line="${lines[index]}"
    [[ "$line" == '{"action":"deploy",'* && "$line" == *"\"to\":\"$live\""* ]] || continue
    [[ "$line" == *"\"from\":\"$target\""* && "$line" =~ \"backup\":\"([^\"]*)\" ]] && file="${BASH_REMATCH[1]}"
    break
  done
  [[ -n "$file" && -f "$file" ]] || return 0
  if ! read_database "$dir"; then
    say "only if the data must go back too: $file holds it as it was before $live was deployed (the data of $target); restore it as docs/runbooks/restore.md says"
    return 0
  fi
  say "only if the data must go back too (the backup taken before $live was deployed holds the data of $target): stop the server, restore it (the data now is kept under a dated name), start it:
  \$ $dir/run.sh stop
  \$ cargo xtask restore $db_host $db_port $db_name $db_user $file $file.sha256
  \$ $dir/run.sh start
  \$ curl -sSf $url/actuator/health"
}

main "$@"
