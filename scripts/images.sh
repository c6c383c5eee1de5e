#!/usr/bin/env bash
# images.sh: build the local server image for the integration tests, with no
# registry: Debian bookworm's own redis-server, memcached and postgresql-15
# packages, bootstrapped with debootstrap from the machine's apt mirror and
# imported into Docker with `docker import`.
#
# One image serves all three servers; it is tagged
#     wechatconf/debian-servers:<hash of this script>
# so it is rebuilt only when this recipe changes, and skipped when that tag
# exists. The image carries the label org.wechatconf.image=debian-servers,
# which the tests (integration/servers) read to choose the start commands:
#     redis-server --bind 0.0.0.0 --protected-mode no ...
#     memcached -u nobody -l 0.0.0.0 ...
#     wechatconf-postgres [postgres args]  (baked in below: initdb with trust
#         auth on first start, listen on all addresses, run as postgres)
#
# stdout: shell lines to eval (eval "$(scripts/images.sh)"), naming the
# image for each server unless the variable is already set:
#     export WECHATCONF_REDIS_IMAGE="${WECHATCONF_REDIS_IMAGE:-wechatconf/debian-servers:0123456789ab}"
#     ...
# Progress goes to stderr. Needs root (debootstrap) and a running Docker
# engine (scripts/docker-up.sh). MIRROR=http://... overrides the mirror;
# WECHATCONF_DEBOOTSTRAP_CACHE (default /var/cache/wechatconf/debootstrap)
# keeps the downloaded packages for the next build.
set -euo pipefail

log() { echo "images: $*" >&2; }
die() { echo "images: ERROR: $*" >&2; exit 1; }

SUITE=bookworm
REPO=wechatconf/debian-servers
self=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(sha256sum "$self" | cut -c1-12)
IMAGE=$REPO:$hash

# print_env names the image for each server, keeping a choice the caller
# already made in the environment.
print_env() {
	local v
	for v in WECHATCONF_REDIS_IMAGE WECHATCONF_MEMCACHED_IMAGE WECHATCONF_POSTGRES_IMAGE; do
		echo "export $v=\"\${$v:-$IMAGE}\""
	done
}

docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker-up.sh first"

# One build at a time on this machine: a second caller waits, then finds the tag.
exec 9>"${TMPDIR:-/tmp}/wechatconf-images.lock"
flock 9

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "$IMAGE exists; nothing to build"
	print_env
	exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building $IMAGE needs root (debootstrap); run as root or set WECHATCONF_*_IMAGE to images you have"

if ! command -v debootstrap >/dev/null 2>&1; then
	log "debootstrap not found: installing it with apt-get"
	DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 || die "apt-get install debootstrap failed"
fi

# find_mirror prints the first enabled "deb" source of $SUITE itself (not
# -updates or -security) in the machine's apt sources, one-line or deb822.
find_mirror() {
	local f
	shopt -s nullglob
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v suite="$SUITE" '
			{ sub(/#.*/, "") }
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i+1) == suite && $i ~ /^(https?|ftp|file):/) { print $i; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v suite="$SUITE" '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && tolower(enabled) != "no" && uri != "") { print uri; found = 1 }
				types = suites = enabled = uri = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); if (found) exit; next }
			{
				key = tolower($1); sub(/:$/, "", key)
				val = $0; sub(/^[^:]*:[ \t]*/, "", val)
				if (key == "types") types = val
				else if (key == "suites") suites = val
				else if (key == "enabled") enabled = val
				else if (key == "uris") { split(val, u, /[ \t]+/); if (u[1] ~ /^(https?|ftp|file):/) uri = u[1] }
			}
			END { if (!found) flush() }' "$f"
	done
}

MIRROR=${MIRROR:-$(find_mirror | head -n 1)}
[ -n "$MIRROR" ] || die "no '$SUITE' deb source found in /etc/apt/sources.list or /etc/apt/sources.list.d; set MIRROR=http://your.debian.mirror/debian"

workdir=$(mktemp -d "${TMPDIR:-/var/tmp}/wechatconf-image.XXXXXX")
trap 'rm -rf "$workdir"' EXIT
rootfs=$workdir/rootfs
mkdir "$rootfs"

log "building $IMAGE: debootstrap $SUITE from $MIRROR (log: $workdir/debootstrap.log)"
start=$SECONDS
# Downloaded packages are kept for the next build (a changed recipe).
cache=${WECHATCONF_DEBOOTSTRAP_CACHE:-/var/cache/wechatconf/debootstrap}
mkdir -p "$cache"
if ! debootstrap --variant=minbase --include=redis-server,memcached,postgresql-15 \
	--cache-dir="$cache" "$SUITE" "$rootfs" "$MIRROR" >"$workdir/debootstrap.log" 2>&1; then
	tail -n 30 "$workdir/debootstrap.log" >&2
	[ -f "$rootfs/debootstrap/debootstrap.log" ] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
	die "debootstrap failed (see above)"
fi
log "debootstrap done in $((SECONDS - start))s"

# The PostgreSQL start command. Under root it prepares the data directory and
# drops to the postgres user; the first start runs initdb with trust auth and
# opens pg_hba to every address (a throwaway test server); every start then
# runs postgres listening on all addresses, with the caller's extra arguments.
cat >"$rootfs/usr/local/bin/wechatconf-postgres" <<'SCRIPT'
#!/bin/sh
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/wechatconf}
BIN=/usr/lib/postgresql/15/bin
export PGDATA
if [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	"$BIN/initdb" --username=postgres --auth=trust --encoding=UTF8 --locale=C --no-sync
	echo "host all all all trust" >>"$PGDATA/pg_hba.conf"
fi
exec "$BIN/postgres" -c listen_addresses='*' "$@"
SCRIPT
chmod 755 "$rootfs/usr/local/bin/wechatconf-postgres"

# Smaller image: no package cache, no package lists, no cluster the package
# created (the entrypoint makes its own).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
	"$rootfs/var/lib/postgresql/15/main" "$rootfs/etc/postgresql/15/main"

log "importing $rootfs as $IMAGE"
tar -C "$rootfs" -c . | docker import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'ENV LANG=C.UTF-8' \
	--change 'LABEL org.wechatconf.image=debian-servers' \
	--change "LABEL org.wechatconf.recipe=$hash" \
	--change 'CMD ["/bin/sh"]' \
	- "$IMAGE" >/dev/null || die "docker import failed"
log "built $IMAGE in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"

# Images of older recipes are dead weight now; drop those no container uses.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | while read -r old; do
	[ "$old" = "$IMAGE" ] && continue
	if docker image rm "$old" >/dev/null 2>&1; then log "removed old image $old"; fi
done

print_env
