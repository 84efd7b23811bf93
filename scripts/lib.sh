# Sourced by dev.sh and test.sh.

# install_missing COMMAND=PACKAGE...: installs, with apt-get, the Debian
# package of each command that is not on PATH (as root, or through sudo).
install_missing() {
  local missing=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  install_packages "${missing[@]}"
}

# install_packages PACKAGE...: installs Debian packages with apt-get (as
# root, or through sudo).
install_packages() {
  local missing=("$@")
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "$(basename "$0"): needs ${missing[*]}, and sudo is not installed: run as root, or install sudo," \
        "or install them yourself: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
    sudo=sudo
  fi
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${missing[@]}"
}
