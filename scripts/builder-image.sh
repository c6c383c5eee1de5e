#!/usr/bin/env bash
# builder-image.sh: build the local Go builder image for the container recipe
# (deploy/container/Dockerfile, build arg BUILDER_IMAGE), with no registry:
# FROM scratch plus this machine's Go toolchain (the official Go release's
# tools are static binaries) and its CA bundle. It stands in for
# golang:1.26-bookworm where Docker Hub cannot be reached, which is why the
# Dockerfile's build stages run exec-form RUNs only: this image has no shell.
#
# Tagged
#     wechatconf/go-builder:<hash of this script, the go binary, GOROOT's
#                            VERSION and the CA bundle>
# so it is rebuilt only when one of them changes, and skipped when that tag
# exists (older tags no container uses are removed after a build).
#
# stdout: the image name, one line. Progress goes to stderr. Needs a running
# Docker engine (scripts/docker-up.sh) and `go` on PATH. CA_BUNDLE overrides
# the CA file (default /etc/ssl/certs/ca-certificates.crt, Debian's).
set -euo pipefail

log() { echo "builder-image: $*" >&2; }
die() { echo "builder-image: ERROR: $*" >&2; exit 1; }

REPO=wechatconf/go-builder
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

command -v go >/dev/null 2>&1 || die "the go command is not on PATH"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer; run scripts/docker-up.sh first"
[ -r "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates, or set CA_BUNDLE)"

goroot=$(go env GOROOT)
{ [ -x "$goroot/bin/go" ] && [ -r "$goroot/VERSION" ]; } || die "GOROOT $goroot has no bin/go or VERSION"
self=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(cat "$self" "$goroot/bin/go" "$goroot/VERSION" "$CA_BUNDLE" | sha256sum | cut -c1-12)
IMAGE=$REPO:$hash

# One build at a time on this machine: a second caller waits, then finds the tag.
exec 9>"${TMPDIR:-/tmp}/wechatconf-builder-image.lock"
flock 9

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
	log "$IMAGE exists; nothing to build"
	echo "$IMAGE"
	exit 0
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/wechatconf-builder.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$CA_BUNDLE" "$ctx/ca-certificates.crt"
mkdir -m 1777 "$ctx/tmp"
cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY tmp /tmp
ENV PATH=/usr/local/go/bin:/go/bin GOPATH=/go HOME=/root GOTOOLCHAIN=local
LABEL org.wechatconf.image=go-builder org.wechatconf.recipe=$hash
EOF

log "building $IMAGE from $goroot ($(head -n 1 "$goroot/VERSION")) and $CA_BUNDLE"
start=$SECONDS
# One tar stream is the build context: the files above, and GOROOT as go/
# (without its tests, docs and API lists, which building does not read).
tar -c -C "$ctx" Dockerfile ca-certificates.crt tmp \
	-C "$goroot" --exclude=./test --exclude=./doc --exclude=./api --exclude=./misc \
	--exclude='*/testdata' --transform 's,^\./,go/,' . |
	docker build -q -t "$IMAGE" - >"$ctx/build.log" 2>&1 || { tail -n 20 "$ctx/build.log" >&2; die "docker build of $IMAGE failed"; }
log "built $IMAGE in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"

docker image ls --format '{{.Repository}}:{{.Tag}}' "$REPO" | while read -r old; do
	[ "$old" = "$IMAGE" ] && continue
	if docker image rm "$old" >/dev/null 2>&1; then log "removed old image $old"; fi
done

echo "$IMAGE"
