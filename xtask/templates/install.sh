#!/usr/bin/env bash
# install.sh: installs saulpos-server @VERSION@ for the @ENV@ environment from this payload into
# <dest>/saulpos-@ENV@/; `cargo xtask deploy @ENV@ @VERSION@ <dest>` runs this same script. Written by
# `cargo xtask package`; needs bash, coreutils, GNU tar with gzip (which tar -z runs) and util-linux only.
set -euo pipefail

ENV="@ENV@"
VERSION="@VERSION@"
ARCHIVE="@ARCHIVE@"
TOP="saulpos-server-@VERSION@"
# The database of saulpos.env, once read_database has read it.
db_host='' db_port='' db_name='' db_user='' db_password=''

# @COMMON@

usage() {
  cat <<EOF
Usage: ./install.sh [options] <dest>

Install saulpos-server $VERSION for $ENV from this payload into <dest>/saulpos-$ENV/:
the archive is checked against its checksum and manifest before anything under <dest> changes,
extracted under a temporary name and renamed, run.sh, rollback.sh, the example environment file
and the systemd unit are written, and the live link 'current' is switched in one rename.
The operator's saulpos.env is never touched.

Arguments:
  <dest>            the folder that holds the environments' folders, e.g. /opt/saulpos;
                    it must exist

Options:
  --reason TEXT     why, for the history (e.g. a change ticket)
  --keep N          how many releases to keep (default 5; never fewer than 2)
  --allowed-signers FILE
                    require a valid signature (SHA256SUMS.sig) by a key in FILE; by default
                    <dest>/allowed_signers when it exists, else signatures are not checked
  --restart         after the switch, restart the service (systemctl where the unit is active,
                    else run.sh restart) and wait until health is UP with this version and the
                    smoke checks pass; if not, switch back, restart the release before, check
                    it, and fail saying why
  --restart-command COMMAND
                    with --restart: the command that restarts the service (sh, in the folder)
  --health-timeout DURATION
                    with --restart: how long this version may take to be UP: 60s, 2m or
                    plain seconds (default 60s)
  --health-url URL  with --restart: where the server answers, http://host:port (default
                    http://127.0.0.1:<SAULPOS_SERVER_PORT of saulpos.env, else 8080>)
  --no-backup       skip the backup taken before the switch (staging and prod, when
                    saulpos.env names a database); the history records that none was taken
  --backup          take that backup in dev too
  --backup-dir DIR  where it goes (default: backups/ in the environment's folder, readable by
                    its owner only); implies --backup. Needs pg_dump and pg_restore.
  -h, --help        print this help

After it: configure <dest>/saulpos-$ENV/saulpos.env (see saulpos.env.example), then start
the server with systemd (the unit is written beside run.sh) or with run.sh.
EOF
}

# Refuses an archive whose checksum, manifest or entries are not what this payload says, before
# anything under <dest> changes.
verify_payload() {
  local sum name line path perms owner size day time rest listed='' expected='' manifest sums
  local -A seen=()
  for name in "$ARCHIVE" "$ARCHIVE.sha256" manifest.txt manifest.json SHA256SUMS; do
    [[ -f "$here/$name" ]] || err "refused: this payload has no $name; download the payload again; nothing was installed"
  done
  # The archive is decompressed once, outside <dest>, for both the listing and the extraction.
  tarball="$(mktemp "${TMPDIR:-/tmp}/saulpos-install.XXXXXX")"
  trap 'rm -f -- "$tarball"' EXIT
  # Its SHA256SUMS lists every other file it holds; with allowed signers, a key of theirs signed it.
  if [[ -n "$allowed_signers" ]]; then
    verify_signature "$here/SHA256SUMS" "$here/SHA256SUMS.sig" "$allowed_signers" ||
      err "refused: the payload's signature does not check out against $allowed_signers; nothing was installed"
    say "signature: $signer"
  else
    say "signatures were not checked: no $dest/allowed_signers (or --allowed-signers)"
  fi
  # Decompress while the payload is hashed: both must finish before anything is used.
  gzip -dc -- "$here/$ARCHIVE" >"$tarball" 2>/dev/null &
  local unzipping=$!
  if ! (cd -- "$here" && sha256sum -c --strict --quiet SHA256SUMS >/dev/null 2>&1); then
    wait "$unzipping" || true
    err "refused: the payload's files do not match its SHA256SUMS (damaged or replaced); download the payload again; nothing was installed"
  fi
  sums=$'\n'"$(<"$here/SHA256SUMS")"$'\n'
  for path in "$here"/*; do
    name="${path##*/}"
    [[ "$name" == SHA256SUMS || "$name" == SHA256SUMS.sig ]] && continue
    [[ "$sums" == *"  $name"$'\n'* ]] ||
      err "refused: the payload holds $name, which its SHA256SUMS does not list; nothing was installed"
  done
  read -r sum name <"$here/$ARCHIVE.sha256" || true
  [[ "${name#\*}" == "$ARCHIVE" ]] ||
    err "refused: $ARCHIVE.sha256 names ${name:-nothing}, not $ARCHIVE; download the payload again; nothing was installed"
  # SHA256SUMS, checked above, hashed the archive already: its .sha256 must say the same.
  [[ "$sums" == *$'\n'"$sum  $ARCHIVE"$'\n'* ]] ||
    err "refused: $ARCHIVE does not match its checksum $ARCHIVE.sha256 (damaged or replaced); download the payload again; nothing was installed"
  manifest=$'\n'"$(<"$here/manifest.txt")"$'\n'
  [[ "$manifest" == *$'\n'"version: $VERSION"$'\n'* &&
    "$manifest" == *$'\n'"archive: $ARCHIVE"$'\n'* &&
    "$manifest" == *$'\n'"archive_sha256: $sum"$'\n'* ]] ||
    err "refused: manifest.txt does not describe $ARCHIVE of version $VERSION with that checksum; download the payload again; nothing was installed"
  while IFS= read -r line; do
    [[ "$line" == "file: "* ]] || continue
    read -r path _ rest <<<"${line#file: }"
    safe_manifest_path "$path" "$TOP" ||
      err "refused: the manifest lists the entry \"$path\", which is unsafe (outside $TOP/, absolute, or climbing with ..); nothing was installed"
    expected+="$path"$'\n'
  done <"$here/manifest.txt"
  wait "$unzipping" ||
    err "refused: $ARCHIVE does not decompress (damaged); download the payload again; nothing was installed"
  while IFS= read -r line; do
    read -r perms owner size day time path rest <<<"$line"
    : "$owner" "$size" "$day" "$time"
    case "${perms:0:1}" in
      -|d) ;;
      l) err "refused: the archive's entry \"$path\" is unsafe: it is a link ($line); nothing was installed" ;;
      h) err "refused: the archive's entry \"$path\" is unsafe: it is a hard link; nothing was installed" ;;
      *) err "refused: the archive's entry \"$path\" is unsafe: it is a device or fifo ($line); nothing was installed" ;;
    esac
    [[ -z "$rest" ]] || err "refused: the archive's entry \"$path $rest\" is unsafe: its name has spaces or it is a link; nothing was installed"
    path="${path%/}"
    safe_manifest_path "$path" "$TOP" ||
      err "refused: the archive's entry \"$path\" is unsafe (outside $TOP/, absolute, or climbing with ..); nothing was installed"
    [[ -z "${seen[$path]:-}" ]] ||
      err "refused: the archive's entry \"$path\" is unsafe: it appears twice (a later one would replace the first); nothing was installed"
    seen[$path]=1
    listed+="$path"$'\n'
  done < <(tar --numeric-owner -tvf "$tarball")
  [[ "$listed" == "$expected" ]] ||
    err "refused: the archive's entries are not the ones its manifest lists; download the payload again; nothing was installed"
}

# Extracts the archive into releases/<version>/ under a temporary name, checks every file against
# the manifest, and renames it into place. Reuses an intact copy already there.
install_release() {
  local target="$payload_dir/releases/$VERSION" stage line path rest relative mode
  local -A by_mode=()
  local -a written=() paths=()
  if [[ -d "$target" ]] && check_release "$target" "$TOP" >/dev/null 2>&1; then
    say "$target is already there and intact"
    return 0
  fi
  # remove_partials cleared any leftover under this name.
  stage="$payload_dir/releases/.$VERSION.partial-$$"
  mkdir -- "$stage"
  tar -xf "$tarball" -C "$stage" --strip-components=1 --no-same-owner --no-same-permissions ||
    err "cannot extract $ARCHIVE into $stage; check the free space under $dest; the live release is unchanged"
  while IFS= read -r line; do
    [[ "$line" == "file: "* ]] || continue
    read -r path _ rest <<<"${line#file: }"
    relative="${path#"$TOP"}"
    relative="${relative#/}"
    [[ "$rest" =~ mode=([0-7]{4}) ]] || continue
    printf -v mode '%o' $((8#${BASH_REMATCH[1]} & 8#755))
    by_mode[$mode]+="$stage/${relative:-.}"$'\n'
    written+=("$stage/${relative:-.}")
  done <"$here/manifest.txt"
  # One chmod per mode, as the manifest gives them (never more than 0755).
  for mode in "${!by_mode[@]}"; do
    mapfile -t paths <<<"${by_mode[$mode]%$'\n'}"
    chmod "$mode" -- "${paths[@]}"
  done
  cp -- "$here/manifest.json" "$here/manifest.txt" "$here/$ARCHIVE.sha256" "$here/SHA256SUMS" "$stage/"
  [[ ! -f "$here/SHA256SUMS.sig" ]] || cp -- "$here/SHA256SUMS.sig" "$stage/"
  chmod 644 -- "$stage"/manifest.json "$stage"/manifest.txt "$stage/$ARCHIVE.sha256" "$stage"/SHA256SUMS*
  check_release "$stage" "$TOP" ||
    err "refused: the extracted files do not match the manifest; the live release is unchanged"
  # Every file and folder on disk before the rename makes the release visible.
  sync -- "${written[@]}" "$stage"/manifest.json "$stage"/manifest.txt "$stage/$ARCHIVE.sha256" "$stage"/SHA256SUMS*
  if [[ -e "$target" ]]; then
    say "$target was damaged; replacing it"
    mv -T -- "$target" "$payload_dir/releases/.$VERSION-damaged.partial-$$"
    mv -T -- "$stage" "$target"
    rm -rf -- "$payload_dir/releases/.$VERSION-damaged.partial-$$"
  else
    mv -T -- "$stage" "$target"
  fi
  sync -- "$payload_dir/releases"
  say "extracted $target"
}

# The files around the releases, from this payload. Each is written
# under a temporary name with its mode, then renamed into place.
write_payload_files() {
  local unit="saulpos-$ENV.service" name text
  local part=".partial-$$"
  install -m 755 -- "$here/run.sh" "$payload_dir/.run.sh$part"
  install -m 755 -- "$here/rollback.sh" "$payload_dir/.rollback.sh$part"
  install -m 644 -- "$here/saulpos.env.example" "$payload_dir/.saulpos.env.example$part"
  text="$(<"$here/$unit")"
  printf '%s\n' "${text//@PAYLOAD_DIR@/"$payload_dir"}" >"$payload_dir/.$unit$part"
  chmod 644 -- "$payload_dir/.$unit$part"
  for name in run.sh rollback.sh saulpos.env.example "$unit"; do
    mv -T -- "$payload_dir/.$name$part" "$payload_dir/$name"
  done
  if [[ ! -e "$payload_dir/manifest.txt" && ! -L "$payload_dir/manifest.txt" ]]; then
    ln -s -- current/manifest.txt current/manifest.json "$payload_dir/"
  fi
}

# The backup of the environment's database before the switch, as `cargo xtask backup` takes it:
# pg_dump (custom format) into a private temporary file, read whole by pg_restore, its
# <name>.sha256 written, both renamed into place. Sets backup_file and backup_sha256.
take_backup() {
  local dir="$1" stem now name part sum
  need_cmd pg_dump pg_restore
  (umask 077 && mkdir -p -- "$dir") || err "cannot create the backup folder $dir; nothing was changed"
  stem="${db_name//[^[:alnum:]._-]/_}"
  local -x TZ=UTC0
  printf -v now '%(%Y%m%dT%H%M%SZ)T' -1
  # Named to the second: one taken within the same second waits for the next.
  if [[ -e "$dir/$stem-$now.dump" ]]; then
    sleep 1.1
    printf -v now '%(%Y%m%dT%H%M%SZ)T' -1
  fi
  name="$stem-$now.dump"
  part="$dir/.$name.partial-$$"
  say "backing up $db_name at $db_host:$db_port as $db_user into $dir"
  if ! (
    umask 077
    [[ -z "$db_password" ]] || export PGPASSWORD="$db_password"
    pg_dump --format=custom --compress=1 -h "$db_host" -p "$db_port" -U "$db_user" -w \
      -d "dbname='${db_name//\'/\\\'}'" >"$part" &&
      pg_restore --file=/dev/null -- "$part"
  ); then
    rm -f -- "$part"
    err "refused: the backup of $db_name at $db_host:$db_port failed (see above); nothing was changed (--no-backup skips it)"
  fi
  read -r sum _ < <(sha256sum -- "$part")
  (umask 077 && printf '%s  %s\n' "$sum" "$name" >"$dir/.$name.sha256.partial-$$")
  sync -- "$part" "$dir/.$name.sha256.partial-$$"
  mv -T -- "$part" "$dir/$name"
  mv -T -- "$dir/.$name.sha256.partial-$$" "$dir/$name.sha256"
  sync -- "$dir"
  backup_file="$dir/$name"
  backup_sha256="$sum"
  say "backup: $backup_file (sha256 $sum)"
}

# Removes the oldest releases beyond --keep, never the live one or the one before it.
prune() {
  local live="$1" previous="$2" excess version
  local -a versions=()
  local -a folders=("$payload_dir"/releases/[0-9]*/)
  # Nothing to prune: spare the sort.
  ((${#folders[@]} > keep)) || return 0
  mapfile -t versions < <(kept_versions "$payload_dir")
  excess=$((${#versions[@]} - keep))
  for version in "${versions[@]}"; do
    ((excess > 0)) || break
    [[ "$version" == "$live" || "$version" == "$previous" ]] && continue
    rm -rf -- "${payload_dir:?}/releases/$version"
    say "removed the old release $payload_dir/releases/$version"
    prune_backups "$version"
    excess=$((excess - 1))
  done
}

# The backups taken before the deploys of a release just removed go with it.
prune_backups() {
  local version="$1" line file
  [[ -f "$payload_dir/history.log" ]] || return 0
  while IFS= read -r line; do
    [[ "$line" == '{"action":"deploy",'* && "$line" == *"\"to\":\"$version\""* ]] || continue
    [[ "$line" =~ \"backup\":\"([^\"]*)\" ]] || continue
    file="${BASH_REMATCH[1]}"
    for file in "$file" "$file.sha256"; do
      [[ -e "$file" ]] || continue
      rm -f -- "$file"
      say "removed the backup $file (taken before $version)"
    done
  done <"$payload_dir/history.log"
}

main() {
  local dest='' reason='' before previous url started
  keep=5
  allowed_signers=''
  signer=''
  local restart=false restart_command='' health_timeout=60
  local no_backup=false want_backup=false backup_dir='' backup_skipped=''
  backup_file=''
  backup_sha256=''
  # shellcheck disable=SC2034 # read by health_url (common.sh)
  health_override=''
  while (($# > 0)); do
    case "$1" in
      -h | --help) usage; return 0 ;;
      --reason) (($# >= 2)) || err "--reason needs a text, e.g. --reason 'CHG-123'"; reason="$2"; shift 2 ;;
      --reason=*) reason="${1#--reason=}"; shift ;;
      --keep) (($# >= 2)) || err "--keep needs a number, e.g. --keep 5"; keep="$2"; shift 2 ;;
      --keep=*) keep="${1#--keep=}"; shift ;;
      --allowed-signers) (($# >= 2)) || err "--allowed-signers needs a file"; allowed_signers="$2"; shift 2 ;;
      --allowed-signers=*) allowed_signers="${1#--allowed-signers=}"; shift ;;
      --restart | --restart-command | --health-timeout | --health-url) gate_option "$@"; shift "$REPLY" ;;
      --no-backup) no_backup=true; shift ;;
      --backup) want_backup=true; shift ;;
      --backup-dir) (($# >= 2)) || err "--backup-dir needs a folder"; backup_dir="$2"; want_backup=true; shift 2 ;;
      --) shift; break ;;
      -*) err "unknown option $1; see ./install.sh --help" ;;
      *)
        [[ -z "$dest" ]] || err "one destination only (got $dest and $1); see ./install.sh --help"
        dest="$1"
        shift
        ;;
    esac
  done
  if (($# > 0)); then
    [[ -z "$dest" && $# -eq 1 ]] || err "one destination only; see ./install.sh --help"
    dest="$1"
  fi
  [[ -n "$dest" ]] || err "give the folder to install into, e.g. ./install.sh /opt/saulpos; see ./install.sh --help"
  [[ "$keep" =~ ^[0-9]+$ ]] || err "--keep $keep is not a number; give e.g. --keep 5"
  check_gate_options
  ((keep >= 2)) || err "--keep $keep would not keep the release to roll back to; use 2 or more"
  [[ "$no_backup" == false || "$want_backup" == false ]] || err "--no-backup goes against --backup and --backup-dir; give one"
  need_cmd tar gzip mktemp sha256sum flock sort stat readlink mv cp install ln id sync
  started="${EPOCHREALTIME/./}"

  here="$(script_dir)"
  [[ -d "$dest" ]] || err "$dest does not exist; create it (e.g. sudo install -d -o \$USER $dest) and run again"
  dest="$(cd -- "$dest" && pwd -P)"
  check_destination "$dest"
  if [[ -n "$allowed_signers" ]]; then
    [[ -f "$allowed_signers" ]] || err "--allowed-signers $allowed_signers does not exist; give the allowed_signers file (lines '<identity> <key type> <public key>')"
  elif [[ -f "$dest/allowed_signers" ]]; then
    allowed_signers="$dest/allowed_signers"
  fi

  # 1. Nothing under <dest> changes unless the archive is exactly what was packaged.
  verify_payload
  say "verified $ARCHIVE against its checksum and manifest"

  # 2. Under the lock, shared with cargo xtask deploy and rollback.sh.
  payload_dir="$dest/saulpos-$ENV"
  mkdir -p -- "$payload_dir"
  take_lock "$payload_dir" "install $VERSION"
  mkdir -p -- "$payload_dir/releases" "$payload_dir/logs"
  remove_partials "$payload_dir" "$payload_dir/releases"
  # 2b. The database as it is before this release touches it; a failed backup stops here.
  if [[ "$no_backup" == true ]]; then
    backup_skipped="--no-backup"
    say "no backup before this deploy (--no-backup)"
  elif [[ "$want_backup" == false && "$ENV" == dev ]]; then
    backup_skipped="off for dev (--backup takes one)"
  elif [[ "$(live_version "$payload_dir")" == "$VERSION" ]]; then
    backup_skipped="$VERSION is already live"
  elif ! read_database "$payload_dir"; then
    backup_skipped="saulpos.env names no database (SAULPOS_DB_URL and SAULPOS_DB_USERNAME)"
    [[ "$want_backup" == false ]] || err "cannot take the backup asked for: $backup_skipped; nothing was changed"
    say "no backup before this deploy: $backup_skipped"
  else
    take_backup "${backup_dir:-$payload_dir/backups}"
  fi
  install_release

  # 3. The files around the releases, then the switch: one rename.
  write_payload_files
  before="$(live_version "$payload_dir")"
  [[ "$before" == "$VERSION" ]] || switch_to "$payload_dir" "$VERSION"
  record "$payload_dir" deploy "$before" "$VERSION" "$reason" "$backup_file" "$backup_sha256" "$backup_skipped"
  say "live release of $ENV: $VERSION (was ${before:-none}) in $(((${EPOCHREALTIME/./} - started) / 1000)) ms"
  previous="$(previous_version "$payload_dir" "$VERSION")"
  prune "$VERSION" "$previous"

  url="$(health_url "$payload_dir")"
  if [[ "$restart" == true ]]; then
    if ! gate "$payload_dir" "$VERSION" "$restart_command" "$health_timeout"; then
      [[ -n "$before" && "$before" != "$VERSION" ]] ||
        err "$VERSION failed its health gate, and there is no release before it to go back to; $VERSION stays live"
      say "$VERSION failed its health gate; switching back to $before"
      switch_to "$payload_dir" "$before"
      record "$payload_dir" rollback "$VERSION" "$before" "automatic: $VERSION failed its health gate"
      if gate "$payload_dir" "$before" "$restart_command" "$health_timeout"; then
        err "$VERSION failed its health gate at $url; $before is live again, UP and passing the smoke checks"
      fi
      err "$VERSION failed its health gate at $url; $before is live again but NOT healthy either"
    fi
    return 0
  fi
  next_steps "$url"
}

# What to do after an install without --restart, each command on a "  $ " line, as it runs
# here: saulpos.env first on a first install, else start or restart whatever runs the service.
next_steps() {
  local url="$1" env_file="$payload_dir/saulpos.env" unit="saulpos-$ENV"
  if [[ ! -e "$env_file" ]]; then
    say "next: $ENV has no saulpos.env yet, and the server needs it first: copy the example, readable by its owner only,
  \$ install -m 600 $payload_dir/saulpos.env.example $env_file
then set the database and the smoke user in it (see its comments), create them (docs/runbooks/deploy.md), and start $VERSION:
  \$ $payload_dir/run.sh start
  (or with systemd: sudo systemctl enable --now $payload_dir/$unit.service)
run.sh start waits until it listens and says where; /actuator/health on that port checks it."
  elif command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null; then
    say "next: systemd runs the release before; restart it to run $VERSION:
  \$ sudo systemctl restart $unit
then check it:
  \$ curl -sSf $url/actuator/health"
  elif "$payload_dir/run.sh" status >/dev/null 2>&1; then
    say "next: the server runs the release before; restart it to run $VERSION:
  \$ $payload_dir/run.sh restart
then check it:
  \$ curl -sSf $url/actuator/health"
  else
    say "next: start $VERSION (the server is not running):
  \$ $payload_dir/run.sh start
  (or with systemd: sudo systemctl enable --now $payload_dir/$unit.service)
then check it:
  \$ curl -sSf $url/actuator/health"
  fi
}

main "$@"
