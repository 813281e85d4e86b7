# Sourced by the benchmark commands: `needs COMMAND:PACKAGE ...` installs the
# Debian package of each command that is missing (a fresh machine has none of
# Postfix's test tools).
needs() {
  local missing=() t
  for t in "$@"; do
    command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || missing+=("${t#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  # Postfix is only the baseline and the source of smtp-source and smtp-sink
  # here: install it without a mail system, and stopped.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  postfix stop >/dev/null 2>&1 || true
}
