# shellcheck shell=bash
# Reading an environment file (saulpos.env) literally, the one way every shipped script reads it
# (and `cargo xtask` too): NAME=value lines, `export ` and one level of matching quotes taken off,
# the last one winning. Nothing in a value is ever run or expanded: a password holding $(...),
# a backtick or a space is taken as it is. Spliced into the scripts by `cargo xtask package`.

# The value of $2 in the environment file $1 (NAME=value lines, `export ` and one level of quotes
# taken off, the last one winning), or nothing.
env_value() {
  local file="$1" wanted="$2" line name value found=''
  [[ -r "$file" ]] || return 0
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line#export }"
    [[ "$line" == \#* || "$line" != *=* ]] && continue
    name="${line%%=*}"
    name="${name%"${name##*[![:space:]]}"}"
    [[ "$name" == "$wanted" ]] || continue
    value="${line#*=}"
    value="${value#"${value%%[![:space:]]*}"}"
    value="${value%"${value##*[![:space:]]}"}"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    found="$value"
  done <"$file"
  printf '%s' "$found"
}

# Exports every NAME=value of the environment file $1, read as env_value reads them; a line that
# is neither that, a comment nor blank is named by its number (never shown: it may hold a secret)
# and skipped.
export_env_file() {
  local file="$1" line name value number=0
  while IFS= read -r line || [[ -n "$line" ]]; do
    number=$((number + 1))
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line#export }"
    [[ -z "$line" || "$line" == \#* ]] && continue
    name="${line%%=*}"
    name="${name%"${name##*[![:space:]]}"}"
    if [[ "$line" != *=* || ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      printf '%s: warning: line %s of %s is not NAME=value; skipped\n' "${0##*/}" "$number" "$file" >&2
      continue
    fi
    value="${line#*=}"
    value="${value#"${value%%[![:space:]]*}"}"
    value="${value%"${value##*[![:space:]]}"}"
    if [[ "$value" =~ ^\"(.*)\"$ || "$value" =~ ^\'(.*)\'$ ]]; then
      value="${BASH_REMATCH[1]}"
    fi
    export "$name=$value"
  done <"$file"
}
