# shellcheck shell=bash
# What install.sh and rollback.sh share, spliced into both by `cargo xtask package` so that each
# ships as one self-contained file. It keeps the guarantees of `cargo xtask deploy`: the same
# lock (flock on deploy.lock), the same history line, the same checks of a release's files.

# The name this script was started as, for messages.
me="${0##*/}"

# The folder this script is in, however it was started (a symlink, a relative path, from any
# folder): the symlink resolved, then the real path.
script_dir() {
  local self
  self="$(readlink -f -- "${BASH_SOURCE[0]}")"
  (cd -- "${self%/*}" && pwd -P)
}

say() {
  printf '%s: %s\n' "$me" "$*" >&2
}

# Prints the error with what to do, and exits non-zero.
err() {
  printf '%s: error: %s\n' "$me" "$*" >&2
  exit 1
}

need_cmd() {
  local name
  for name in "$@"; do
    command -v "$name" >/dev/null 2>&1 ||
      err "this host has no '$name' on PATH; install it (coreutils, GNU tar and util-linux are needed) and run again"
  done
}

# Who is acting, for the history and the lock: the sudo user, the login, or the uid's name.
# Sets REPLY (no subshell: these run on every install).
current_user() {
  REPLY="${SUDO_USER:-${USER:-${LOGNAME:-}}}"
  if [[ -z "$REPLY" ]]; then
    REPLY="$(id -un 2>/dev/null || printf 'uid %s' "$(id -u)")"
  fi
}

# The time now, RFC 3339 in UTC, in REPLY.
utc_now() {
  local -x TZ=UTC0
  printf -v REPLY '%(%Y-%m-%dT%H:%M:%SZ)T' -1
}

# A JSON string literal for $1, escaped as serde_json escapes it, in REPLY; null for an empty
# value with $2 = null.
json_string() {
  local text="$1" out='' char code index
  if [[ -z "$text" && "${2:-}" == null ]]; then
    REPLY=null
    return
  fi
  text="${text//\\/\\\\}"
  text="${text//\"/\\\"}"
  text="${text//$'\n'/\\n}"
  text="${text//$'\r'/\\r}"
  text="${text//$'\t'/\\t}"
  text="${text//$'\b'/\\b}"
  text="${text//$'\f'/\\f}"
  if [[ "$text" == *[[:cntrl:]]* ]]; then
    for ((index = 0; index < ${#text}; index++)); do
      char="${text:index:1}"
      if [[ "$char" == [[:cntrl:]] ]]; then
        printf -v code '%d' "'$char"
        printf -v char '\\u%04x' "$code"
      fi
      out+="$char"
    done
    text="$out"
  fi
  REPLY="\"$text\""
}

# Takes the payload folder's lock for the rest of this process (flock on deploy.lock, the same
# lock `cargo xtask deploy` takes; $3 names another, e.g. a rollout's rollout.lock), or refuses
# naming the holder. The kernel drops the lock when the process ends, however it ends: a killed
# run never blocks the next one.
take_lock() {
  local dir="$1" action="$2" lock="$1/${3:-deploy.lock}" line pid='' user='' what='' since=''
  exec 9>>"$lock" || err "cannot open $lock; check that you may write to $dir"
  if ! flock -n 9; then
    while IFS= read -r line; do
      case "$line" in
        pid=*) pid="${line#pid=}" ;;
        user=*) user="${line#user=}" ;;
        action=*) what="${line#action=}" ;;
        since=*) since="${line#since=}" ;;
      esac
    done <"$lock" || true
    err "$dir is locked: ${what:-?} by ${user:-?} (pid ${pid:-?}) since ${since:-?} holds it; wait for it to finish and run again"
  fi
  local who
  current_user
  who="$REPLY"
  utc_now
  printf 'pid=%s\nuser=%s\naction=%s\nsince=%s\n' "$$" "$who" "$action" "$REPLY" >"$lock"
}

# Refuses a destination (resolved, absolute) that is one environment's folder, holds a release
# itself, or has a character the systemd unit cannot carry (systemd splits on spaces and expands
# % and $ in the paths it names).
check_destination() {
  local dest="$1"
  case "${dest##*/}" in
    saulpos-dev | saulpos-staging | saulpos-prod)
      err "refused: $dest is the folder of the ${dest##*/saulpos-} environment; give the folder above it (${dest%/*}); nothing was installed" ;;
  esac
  [[ ! -e "$dest/current" && ! -e "$dest/history.log" ]] ||
    err "refused: $dest holds an environment's release (current, history.log); give the folder above it; nothing was installed"
  [[ "$dest" =~ ^[A-Za-z0-9._/+@-]+$ ]] ||
    err "refused: $dest has a character the systemd unit cannot carry (a space, %, \$, a quote, ...); install into a folder whose path has only letters, digits and . _ - + @ /; nothing was installed"
}

# Removes what interrupted runs left (.<name>.partial-<pid>); only called under the lock, so
# every such file belongs to a run that is gone.
remove_partials() {
  local dir path
  for dir in "$@"; do
    for path in "$dir"/.*.partial-*; do
      [[ -e "$path" || -L "$path" ]] || continue
      say "removing $path left by an interrupted run"
      rm -rf -- "$path"
    done
  done
}

# Appends one line to history.log, as `cargo xtask deploy` writes it, and syncs it; $6 to $8 are
# the backup a deploy took, its SHA-256, or why it took none (keys left out when empty).
record() {
  local dir="$1" action="$2" from="$3" to="$4" reason="$5" line key value
  json_string "$action"
  line="{\"action\":$REPLY"
  for key in backup backup_sha256 backup_skipped; do
    case "$key" in
      backup) value="${6:-}" ;;
      backup_sha256) value="${7:-}" ;;
      *) value="${8:-}" ;;
    esac
    [[ -n "$value" ]] || continue
    json_string "$value"
    line+=",\"$key\":$REPLY"
  done
  json_string "$from" null
  line+=",\"from\":$REPLY"
  json_string "$reason" null
  line+=",\"reason\":$REPLY"
  utc_now
  line+=",\"time\":\"$REPLY\""
  json_string "$to"
  line+=",\"to\":$REPLY"
  current_user
  json_string "$REPLY"
  line+=",\"user\":$REPLY}"
  printf '%s\n' "$line" >>"$dir/history.log"
  sync -- "$dir/history.log"
}

# The live version: where `current` points.
live_version() {
  local target
  target="$(readlink -- "$1/current" 2>/dev/null || true)"
  printf '%s' "${target##*/}"
}

# The release live before the live one ($2, else read): the `from` of the last switch to it, if
# still kept.
previous_version() {
  local dir="$1" live="${2:-}" line from to index
  local -a lines=()
  [[ -n "$live" ]] || live="$(live_version "$dir")"
  [[ -n "$live" && -f "$dir/history.log" ]] || return 0
  mapfile -t lines <"$dir/history.log"
  for ((index = ${#lines[@]} - 1; index >= 0; index--)); do
    line="${lines[index]}"
    [[ "$line" =~ \"from\":\"([^\"]*)\" ]] || continue
    from="${BASH_REMATCH[1]}"
    [[ "$line" =~ \"to\":\"([^\"]*)\" ]] || continue
    to="${BASH_REMATCH[1]}"
    if [[ "$to" == "$live" && "$from" != "$live" && -d "$dir/releases/$from" ]]; then
      printf '%s' "$from"
      return 0
    fi
  done
}

# Points `current` at releases/<version> in one rename.
switch_to() {
  local dir="$1" version="$2" link="$1/.current.partial-$$"
  rm -f -- "$link"
  ln -s -- "releases/$version" "$link"
  mv -T -- "$link" "$dir/current"
  sync -- "$dir"
}

# Whether a manifest path is one a release may hold: under the top folder, plain names only.
safe_manifest_path() {
  local path="$1" top="$2" rest
  [[ "$path" == "$top" ]] && return 0
  [[ "$path" == "$top/"* ]] || return 1
  rest="${path#"$top/"}"
  [[ "$rest" =~ ^[A-Za-z0-9_][A-Za-z0-9._+-]*(/[A-Za-z0-9_][A-Za-z0-9._+-]*)*$ ]]
}

# Checks a release folder against the manifest.txt it holds (or the one given): every folder
# there, every file with its mode and SHA-256. Prints each problem; fails on any.
check_release() {
  local dir="$1" top="$2" manifest="${3:-$1/manifest.txt}" line path kind rest relative
  local mode sums='' problems=0 index
  local -a actual=() checked_files=() checked_modes=()
  if [[ ! -f "$manifest" ]]; then
    say "problem: $manifest is missing"
    return 1
  fi
  while IFS= read -r line; do
    [[ "$line" == "file: "* ]] || continue
    read -r path kind rest <<<"${line#file: }"
    if ! safe_manifest_path "$path" "$top"; then
      say "problem: the manifest lists $path, outside $top/ or with an unsafe name"
      problems=1
      continue
    fi
    relative="${path#"$top"}"
    relative="${relative#/}"
    case "$kind" in
      dir)
        [[ -d "$dir/${relative:-.}" && ! -L "$dir/${relative:-.}" ]] || {
          say "problem: $dir/$relative is not a folder"
          problems=1
        }
        ;;
      file)
        if [[ ! "$rest" =~ ^size=[0-9]+\ mode=([0-7]{4})\ sha256=([0-9a-f]{64})$ ]]; then
          say "problem: the manifest's line for $path is malformed"
          problems=1
          continue
        fi
        mode="${BASH_REMATCH[1]}"
        sums+="${BASH_REMATCH[2]}  $relative"$'\n'
        if [[ ! -f "$dir/$relative" || -L "$dir/$relative" ]]; then
          say "problem: $dir/$relative is missing"
          problems=1
          continue
        fi
        checked_files+=("$dir/$relative")
        checked_modes+=("$mode")
        ;;
      *)
        say "problem: the manifest lists $path as a $kind, which a release never holds"
        problems=1
        ;;
    esac
  done <"$manifest"
  # The modes, all in one stat.
  if ((${#checked_files[@]} > 0)); then
    mapfile -t actual < <(stat -c %a -- "${checked_files[@]}")
    for index in "${!checked_files[@]}"; do
      if ((8#${actual[index]:-0} != (8#${checked_modes[index]} & 8#755))); then
        say "problem: ${checked_files[index]} has mode ${actual[index]:-?}, the manifest says ${checked_modes[index]}"
        problems=1
      fi
    done
  fi
  if ((problems == 0)) && [[ -n "$sums" ]]; then
    if ! (cd -- "$dir" && printf '%s' "$sums" | sha256sum -c --quiet --strict - >/dev/null 2>&1); then
      while IFS= read -r line; do
        say "problem: $dir/$line"
      done < <(cd -- "$dir" || exit 0; printf '%s' "$sums" | sha256sum -c --quiet --strict - 2>&1)
      problems=1
    fi
  fi
  ((problems == 0))
}

# Checks the SSH signature $2 over $1 against the allowed_signers file $3 (namespace
# saulpos-release), as `cargo xtask` does; sets `signer` to ssh-keygen's line naming the key.
verify_signature() {
  local sums="$1" sig="$2" allowed="$3" principal said
  if [[ ! -f "$sig" ]]; then
    say "problem: $sums is not signed (no ${sig##*/}), and $allowed requires a signature"
    return 1
  fi
  need_cmd ssh-keygen
  while IFS= read -r principal; do
    [[ -n "$principal" ]] || continue
    if said="$(ssh-keygen -Y verify -f "$allowed" -I "$principal" -n saulpos-release -s "$sig" <"$sums" 2>/dev/null)"; then
      # shellcheck disable=SC2034 # read by the scripts this file is spliced into
      signer="${said%%$'\n'*}"
      return 0
    fi
  done < <(ssh-keygen -Y find-principals -f "$allowed" -s "$sig" 2>/dev/null || true)
  say "problem: $sig is not a signature by any key in $allowed (or $sums changed after it was signed)"
  return 1
}

# `http://127.0.0.1:<port>` from the payload's saulpos.env (SAULPOS_SERVER_PORT), else 8080;
# --health-url (health_override) wins.
health_url() {
  local line port=8080
  if [[ -n "${health_override:-}" ]]; then
    printf '%s' "${health_override%/}"
    return 0
  fi
  if [[ -r "$1/saulpos.env" ]]; then
    while IFS= read -r line; do
      [[ "$line" =~ ^[[:space:]]*(export[[:space:]]+)?SAULPOS_SERVER_PORT=[\"\']?([0-9]+)[\"\']?[[:space:]]*$ ]] &&
        port="${BASH_REMATCH[2]}"
    done <"$1/saulpos.env"
  fi
  printf 'http://127.0.0.1:%s' "$port"
}

# The kept versions under releases/, oldest first, one a line.
kept_versions() {
  local path
  for path in "$1"/releases/[0-9]*/; do
    [[ -d "$path" ]] || continue
    path="${path%/}"
    printf '%s\n' "${path##*/}"
  done | sort -V
}

# GET a path from the server at $1 (http://host:port) with bash's /dev/tcp, no curl needed: sets
# http_status and http_body; fails when nothing answers.
http_get() {
  http_call GET "$1" "$2" '' ''
}

# A request to the server at $2 with bash's /dev/tcp: method $1, path $3, JSON body $4 (none when
# empty), bearer token $5 (none when empty). Nothing of it is on a command line.
http_call() {
  local method="$1" address="${2#http://}" path="$3" body="$4" token="$5" line head
  local host="${address%%:*}" port="${address##*:}"
  http_status=''
  http_body=''
  exec 8<>"/dev/tcp/$host/$port" || return 1
  head="$method $path HTTP/1.0"$'\r\n'"Host: $host"$'\r\n'"Connection: close"$'\r\n'
  [[ -z "$token" ]] || head+="Authorization: Bearer $token"$'\r\n'
  if [[ -n "$body" ]]; then
    # Content-Length counts bytes, whatever the locale.
    head+="Content-Type: application/json"$'\r\n'"Content-Length: $(
      LC_ALL=C
      printf '%s' "${#body}"
    )"$'\r\n'
  elif [[ "$method" != GET ]]; then
    head+="Content-Length: 0"$'\r\n'
  fi
  printf '%s\r\n%s' "$head" "$body" >&8
  if ! IFS= read -r -t 5 line <&8 || [[ ! "$line" =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then
    exec 8<&-
    return 1
  fi
  http_status="${BASH_REMATCH[1]}"
  while IFS= read -r -t 5 line <&8; do
    [[ "$line" == $'\r' || -z "$line" ]] && break
  done
  IFS= read -r -t 5 -d '' http_body <&8 || true
  exec 8<&-
}

# @ENV_FILE@

# The database saulpos.env names, read as `cargo xtask deploy` reads it: sets db_host, db_port,
# db_name, db_user and db_password; fails when it names none (no URL, name or user).
# shellcheck disable=SC2034 # the db_ variables are read by the scripts this is spliced into
read_database() {
  local file="$1/saulpos.env" url rest authority path=''
  [[ -r "$file" ]] || return 1
  url="$(env_value "$file" SAULPOS_DB_URL)"
  db_user="$(env_value "$file" SAULPOS_DB_USERNAME)"
  db_password="$(env_value "$file" SAULPOS_DB_PASSWORD)"
  case "$url" in
    jdbc:postgresql://*) rest="${url#jdbc:postgresql://}" ;;
    postgresql://*) rest="${url#postgresql://}" ;;
    postgres://*) rest="${url#postgres://}" ;;
    *) return 1 ;;
  esac
  authority="${rest%%/*}"
  [[ "$rest" == */* ]] && path="${rest#*/}"
  authority="${authority##*@}"
  [[ -n "$authority" ]] || return 1
  if [[ "$authority" == *:* ]]; then
    db_host="${authority%:*}"
    db_port="${authority##*:}"
  else
    db_host="$authority"
    db_port=5432
  fi
  db_name="${path%%\?*}"
  [[ -n "$db_name" && -n "$db_user" ]]
}

# The smoke checks' login, as `cargo xtask smoke` does it: the smoke user of saulpos.env in $1
# (dev's demo cashier without one) at $2, profile $3; sets smoke_token, or says why not.
smoke_login() {
  local dir="$1" url="$2" profile="$3" user password body
  user="$(env_value "$dir/saulpos.env" SAULPOS_SMOKE_USERNAME)"
  password="$(env_value "$dir/saulpos.env" SAULPOS_SMOKE_PASSWORD)"
  if [[ -z "$user" || -z "$password" ]]; then
    if [[ "$profile" != dev ]]; then
      say "problem: smoke: no smoke user: set SAULPOS_SMOKE_USERNAME and SAULPOS_SMOKE_PASSWORD in $dir/saulpos.env (and create it: run.sh user add)"
      return 1
    fi
    user=demo-cashier
    password=demo-cashier-password
  fi
  json_string "$user"
  body="{\"username\":$REPLY,"
  json_string "$password"
  body+="\"password\":$REPLY}"
  if ! http_call POST "$url" /api/v1/auth/login "$body" '' 2>/dev/null ||
    [[ "$http_status" != 200 || ! "$http_body" =~ \"token\":\"([0-9a-f]+)\" ]]; then
    say "problem: smoke: the login as $user answered ${http_status:-nothing} (is the smoke user there, with the password of saulpos.env? run.sh user list)"
    return 1
  fi
  smoke_token="${BASH_REMATCH[1]}"
}

# Restarts the service on the live release: `--restart-command`, else systemctl where the unit is
# active, else run.sh restart. The lock's descriptor is not handed on: the server must not hold it.
restart_service() {
  local dir="$1" command="$2"
  if [[ -n "$command" ]]; then
    say "restarting with: $command"
    (cd -- "$dir" && sh -c "$command") 9>&-
  elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "saulpos-$ENV" 2>/dev/null; then
    say "restarting with: systemctl restart saulpos-$ENV"
    systemctl restart "saulpos-$ENV" 9>&-
  else
    "$dir/run.sh" restart 9>&-
  fi
}

# The command that (re)starts the server of folder $1 as it runs now, for a next step: systemd's
# when its unit is active, run.sh restart when run.sh runs it, else run.sh start; in REPLY.
start_hint() {
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "saulpos-$ENV" 2>/dev/null; then
    REPLY="sudo systemctl restart saulpos-$ENV"
  elif "$1/run.sh" status >/dev/null 2>&1; then
    REPLY="$1/run.sh restart"
  else
    REPLY="$1/run.sh start"
  fi
}

# The last line the server logged, for the reason a gate failed.
last_log_line() {
  local line='' log="$1/logs/saulpos.log"
  [[ -f "$log" ]] && line="$(tail -n 1 -- "$log" 2>/dev/null || true)"
  printf '%s' "${line:0:400}"
}

# Whether $1 is a URL http_get can reach: http://host:port.
valid_health_url() {
  [[ "$1" =~ ^http://[A-Za-z0-9._-]+:[0-9]+/?$ ]]
}

# The health gate's options, which install.sh and rollback.sh share: when $1 is one, sets
# restart, restart_command, health_timeout or health_override (the caller's) and puts how many
# words it took in REPLY; fails otherwise.
gate_option() {
  case "$1" in
    --restart) restart=true; REPLY=1 ;;
    --restart-command) (($# >= 2)) || err "--restart-command needs a command"; restart_command="$2"; REPLY=2 ;;
    --health-timeout) (($# >= 2)) || err "--health-timeout needs a duration, e.g. 60s or 2m"; health_timeout="$2"; REPLY=2 ;;
    --health-url) (($# >= 2)) || err "--health-url needs a URL, e.g. http://10.0.0.5:8080"; health_override="$2"; REPLY=2 ;;
    *) return 1 ;;
  esac
}

# A duration as `cargo xtask` takes it (60s, 2m, 1h, 500ms, or plain seconds) in whole seconds
# (rounded up), in REPLY; fails on anything else.
duration_seconds() {
  [[ "$1" =~ ^([0-9]+)(ms|s|m|h)?$ ]] || return 1
  case "${BASH_REMATCH[2]}" in
    ms) REPLY=$(((10#${BASH_REMATCH[1]} + 999) / 1000)) ;;
    m) REPLY=$((10#${BASH_REMATCH[1]} * 60)) ;;
    h) REPLY=$((10#${BASH_REMATCH[1]} * 3600)) ;;
    *) REPLY=$((10#${BASH_REMATCH[1]})) ;;
  esac
}

# Refuses gate options that are malformed or given without --restart; health_timeout becomes
# whole seconds.
check_gate_options() {
  duration_seconds "$health_timeout" ||
    err "--health-timeout \"$health_timeout\" is not a duration; give e.g. --health-timeout 60s, 2m or 90 (seconds)"
  health_timeout="$REPLY"
  [[ -z "$restart_command$health_override" || "$restart" == true ]] ||
    err "--restart-command and --health-url go with --restart"
  [[ -z "$health_override" ]] || valid_health_url "$health_override" ||
    err "--health-url $health_override is not http://host:port; give e.g. --health-url http://10.0.0.5:8080"
}

# The health gate: restarts, waits until health is UP with version $2 (at most $4 seconds), then
# the smoke checks of the profile (health, the version, login, a product lookup, logout). Says
# what failed.
gate() {
  local dir="$1" version="$2" command="$3" timeout="$4" url deadline last='no answer yet' profile
  local started="${EPOCHREALTIME/./}"
  url="$(health_url "$dir")"
  restart_service "$dir" "$command" || {
    say "problem: health stayed DOWN: $version did not start (the restart failed); the log ends: $(last_log_line "$dir")"
    return 1
  }
  deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if http_get "$url" /actuator/health 2>/dev/null; then
      last="health answered $http_status: ${http_body:0:300}"
      if [[ "$http_status" == 200 && "$http_body" == *'"status":"UP"'* ]] &&
        http_get "$url" /actuator/info 2>/dev/null; then
        if [[ "$http_body" == *"\"version\":\"$version\""* ]]; then
          [[ "$http_body" =~ \"profile\":\"([a-z]+)\" ]] && profile="${BASH_REMATCH[1]}"
          smoke_login "$dir" "$url" "${profile:-}" || return 1
          if [[ "${profile:-}" == dev ]]; then
            if ! { http_call GET "$url" /api/v1/products/DEMO-COFFEE-250G '' "$smoke_token" 2>/dev/null && [[ "$http_status" == 200 ]]; }; then
              say "problem: smoke: the demo product lookup answered ${http_status:-nothing}"
              return 1
            fi
          else
            if ! { http_call GET "$url" /api/v1/products/SMOKE-CHECK-NO-SUCH-SKU '' "$smoke_token" 2>/dev/null && [[ "$http_status" == 404 ]]; }; then
              say "problem: smoke: the product lookup (404 path) answered ${http_status:-nothing}"
              return 1
            fi
          fi
          if ! { http_call POST "$url" /api/v1/auth/logout '' "$smoke_token" 2>/dev/null && [[ "$http_status" == 204 ]]; }; then
            say "problem: smoke: the logout answered ${http_status:-nothing}"
            return 1
          fi
          say "$version is UP at $url and passed the smoke checks (restart and health wait: $(((${EPOCHREALTIME/./} - started) / 1000)) ms)"
          return 0
        fi
        last="UP, but the version is not $version: ${http_body:0:200}"
      fi
    fi
    sleep 0.25
  done
  say "problem: health stayed DOWN: $url was not UP with version $version within $timeout s; last: $last; the log ends: $(last_log_line "$dir")"
  if [[ -f "$dir/logs/saulpos.log" ]]; then
    say "the end of $dir/logs/saulpos.log:"
    tail -n 15 -- "$dir/logs/saulpos.log" >&2 || true
  fi
  return 1
}
