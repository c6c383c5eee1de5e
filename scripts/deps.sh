#!/usr/bin/env bash
# deps.sh: install the Debian packages the unit tests run real servers from
# (internal/testserver): redis-server, redis-tools (redis-cli, which creates
# the test Redis Cluster), memcached, postgresql-15. Installs only
# what is missing, saying so on stderr; does nothing when all are present.
# Extra package names may be given as arguments.
set -euo pipefail

log() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "the go command is not on PATH; install Go (see go.mod for the version)"

want=(redis-server redis-tools memcached postgresql-15 "$@")
missing=()
for p in "${want[@]}"; do
	if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them; install them yourself"
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]}; installing them needs root (no sudo found)"
	SUDO=sudo
else
	SUDO=
fi
log "installing missing packages: ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
	die "apt-get install ${missing[*]} failed"
log "installed ${missing[*]}"
