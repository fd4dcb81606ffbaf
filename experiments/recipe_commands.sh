# Sourced by experiments/train_demo_model.sh and experiments/evaluate_demo_model.sh: their flags,
# and how a step is shown and run.

# parse_flags "NAME ..." ARG...: --NAME=value sets the variable NAME in upper case (--data_dir=x:
# DATA_DIR=x), a bare --NAME sets it to 1, --dry_run sets DRY_RUN=1, --help prints the script's
# header comment; other words go to the array POSITIONAL. An unknown flag is an error.
parse_flags() {
  local names=" ${1//$'\n'/ } " arg name
  shift
  POSITIONAL=()
  for arg in "$@"; do
    case "$arg" in
      --dry_run) DRY_RUN=1 ;;
      -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
      --*)
        name=${arg#--}
        name=${name%%=*}
        if [[ "$names" != *" $name "* ]]; then
          echo "${0##*/}: unknown flag $arg (--help lists the flags)" >&2
          exit 2
        fi
        if [[ "$arg" == *=* ]]; then printf -v "${name^^}" '%s' "${arg#*=}"; else printf -v "${name^^}" 1; fi ;;
      *) POSITIONAL+=("$arg") ;;
    esac
  done
}

quoted() {  # the words, each single-quoted where the shell needs it
  local word line=
  for word in "$@"; do
    if [[ "$word" =~ ^[][A-Za-z0-9_./=:,@%+-]+$ ]]; then line+=" $word"; else line+=" '${word//\'/\'\\\'\'}'"; fi
  done
  echo "${line# }"
}

run() {  # prints "+ the command", then runs it unless DRY_RUN=1
  echo "+ $(quoted "$@")"
  if [ "${DRY_RUN:-0}" = 0 ]; then "$@"; fi
}
