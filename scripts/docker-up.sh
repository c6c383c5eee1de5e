#!/usr/bin/env bash
# docker-up.sh: make sure a Docker engine answers, for the integration tests.
#
# Idempotent: when `docker info` already works it does nothing. Otherwise it
# installs Debian's docker.io package if dockerd is missing, starts dockerd in
# the background (log: $DOCKERD_LOG, default /tmp/wechatconf-dockerd.log) and
# waits until the engine answers (at most $DOCKER_UP_TIMEOUT seconds, default
# 60). Everything it does is said on stderr; it exits non-zero with a clear
# message when it cannot bring an engine up.
set -euo pipefail

log() { echo "docker-up: $*" >&2; }
die() { echo "docker-up: ERROR: $*" >&2; exit 1; }

DOCKERD_LOG=${DOCKERD_LOG:-/tmp/wechatconf-dockerd.log}
DOCKER_UP_TIMEOUT=${DOCKER_UP_TIMEOUT:-60}

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
	exit 0
fi

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run: $* (no sudo found); start a Docker engine yourself"
	fi
}

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
	command -v apt-get >/dev/null 2>&1 ||
		die "no Docker engine and no apt-get to install one: install Docker and start it"
	log "dockerd not found: installing Debian's docker.io package"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
		die "apt-get update failed"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >&2 ||
		die "apt-get install docker.io failed"
fi

if pgrep -x dockerd >/dev/null 2>&1; then
	log "dockerd is already running but does not answer yet; waiting"
else
	log "starting dockerd in the background (log: $DOCKERD_LOG)"
	# setsid: dockerd outlives this script and the make run that called it.
	as_root setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

for ((i = 0; i < DOCKER_UP_TIMEOUT * 2; i++)); do
	if docker info >/dev/null 2>&1; then
		log "Docker engine is up ($(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null || echo 'version unknown'))"
		exit 0
	fi
	if ! pgrep -x dockerd >/dev/null 2>&1; then
		tail -n 20 "$DOCKERD_LOG" >&2 || true
		die "dockerd exited; see $DOCKERD_LOG"
	fi
	sleep 0.5
done
tail -n 20 "$DOCKERD_LOG" >&2 || true
die "Docker engine did not answer within ${DOCKER_UP_TIMEOUT}s; see $DOCKERD_LOG"
