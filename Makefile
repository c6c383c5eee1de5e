# wechatconf: the one test command is `make test`.
#
#   make test         everything, with -race, on a fresh Debian machine:
#                     deps -> unit (Docker and image prepared meanwhile)
#                     -> integration -> deploy -> modules
#   make unit         every module's Go files gofmt-clean; root module: go vet,
#                     unit tests (real servers from the machine's
#                     redis-server, memcached, postgresql-15)
#   make integration  integration/ against servers in Docker containers
#                     (starts the engine and builds the local image if needed)
#   make deploy       build and run the container image, verify the systemd
#                     unit (scripts/deploy-test.sh; skipped without Docker)
#   make modules      the other test-only modules (wxcrypto/interop, ...)
#   make images       build the registry-free server image (scripts/images.sh)
#   make docker       start a Docker engine if none answers
#   make deps         apt-install the servers the unit tests need
#   make bench        benchmarks of the root and test-only modules, BENCHTIME
#                     each (default 1s); integration's run inside make integration
#   make clean-containers   remove containers a killed test run left behind
#
# Every test run also runs each benchmark once (-bench=. -benchtime=1x) in
# the same test binary, so benchmarks cannot rot without a second build.
#
# Images: with Docker Hub, `make integration OFFICIAL_IMAGES=1` uses redis:7,
# memcached:1.6 and postgres:15; WECHATCONF_{REDIS,MEMCACHED,POSTGRES}_IMAGE
# choose any image (all three set: no local build). Otherwise the image is
# built locally from Debian packages, without a registry.
#
# CI=true: a missing Docker or server fails instead of skipping, and an
# integration test skipped for a reason outside SKIP_ALLOWED fails the run.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.ONESHELL:
.DEFAULT_GOAL := test

GO ?= go
# The phases of `test` run as sub-makes. Expanded here, once, so that the
# recipe does not mention $(MAKE): `make -n test` then only prints.
SUBMAKE := $(MAKE) --no-print-directory
TESTFLAGS ?= -race -count=1 -timeout=15m
BENCHFLAGS ?= -bench=. -benchtime=1x
BENCHTIME ?= 1s

# Skips that are not a hole in the run: a backend lacking an optional power
# (memcached has no Watch).
SKIP_ALLOWED ?= does not implement store\.(Watcher|Extender)

# testcontainers on a machine without a registry: no reaper (its image cannot
# be pulled; tests remove their containers), and the engine's published ports
# are on this host (not on a guessed gateway). Both can be overridden.
export TESTCONTAINERS_RYUK_DISABLED ?= true
ifeq ($(strip $(DOCKER_HOST)),)
export TESTCONTAINERS_HOST_OVERRIDE ?= 127.0.0.1
endif

ifeq ($(OFFICIAL_IMAGES),1)
export WECHATCONF_REDIS_IMAGE ?= redis:7
export WECHATCONF_MEMCACHED_IMAGE ?= memcached:1.6
export WECHATCONF_POSTGRES_IMAGE ?= postgres:15
endif

# Test-only modules below the root, other than integration/ (run by its own
# target): each has its own go.mod, so the root's ./... does not reach them.
MODULES = $(sort $(patsubst ./%/go.mod,%,$(shell find . -mindepth 2 -name go.mod \
	-not -path './.git/*' -not -path './integration/*' -not -path '*/testdata/*')))

.PHONY: test unit integration deploy modules images docker deps bench clean-containers

# The Docker engine and the image build wait on the network and the disk more
# than on the CPU: they run in the background while the unit tests compile
# and run. Every phase runs even when an earlier one failed, so that one run
# reports every failure; the closing line says which phases failed.
test: deps
	@start=$$SECONDS
	echo "== test: starting Docker and building the image in the background, during the unit tests"
	(scripts/docker-up.sh && scripts/images.sh >/dev/null) &
	prep=$$!
	failed=()
	$(SUBMAKE) unit || failed+=(unit)
	if ! wait $$prep; then
		echo "== test: Docker or the image could not be prepared (see the docker-up:/images: lines above)"
		failed+=(docker/images)
	else
		$(SUBMAKE) integration || failed+=(integration)
	fi
	# Needs the engine only, not the server image: it runs (or, without
	# Docker and outside CI, says it skips) whatever the preparation did.
	$(SUBMAKE) deploy || failed+=(deploy)
	$(SUBMAKE) modules || failed+=(modules)
	if [ $${#failed[@]} -gt 0 ]; then
		echo "== make test: FAILED: $${failed[*]} ($$((SECONDS - start))s)"
		exit 1
	fi
	echo "== make test: all passed ($$((SECONDS - start))s)"

deps:
	@scripts/deps.sh

unit:
	@start=$$SECONDS
	echo "== unit: gofmt, go vet and go test $(TESTFLAGS) in the root module"
	status=0
	unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
	if [ -n "$$unformatted" ]; then
		echo "== unit: not gofmt-formatted (run gofmt -w): $$unformatted"
		status=1
	fi
	$(GO) vet ./... || status=1
	$(GO) test $(TESTFLAGS) $(BENCHFLAGS) ./... || status=1
	echo "== unit: done in $$((SECONDS - start))s"
	exit $$status

docker:
	@scripts/docker-up.sh

images: docker
	@scripts/images.sh >/dev/null

integration: docker
	@start=$$SECONDS
	if [ -z "$${WECHATCONF_REDIS_IMAGE:-}" ] || [ -z "$${WECHATCONF_MEMCACHED_IMAGE:-}" ] || [ -z "$${WECHATCONF_POSTGRES_IMAGE:-}" ]; then
		eval "$$(scripts/images.sh)"
		echo "== integration: images ready after $$((SECONDS - start))s"
	fi
	echo "== integration: images redis=$$WECHATCONF_REDIS_IMAGE memcached=$$WECHATCONF_MEMCACHED_IMAGE postgres=$$WECHATCONF_POSTGRES_IMAGE"
	cd integration
	status=0
	$(GO) vet ./... || status=1
	filter=$$(mktemp "$${TMPDIR:-/tmp}/wechatconf-testfilter.XXXXXX")
	trap 'rm -f "$$filter"' EXIT
	$(GO) build -o "$$filter" ./internal/testfilter
	$(GO) test -json $(TESTFLAGS) -parallel 4 $(BENCHFLAGS) ./... | "$$filter" -allow '$(SKIP_ALLOWED)' || status=1
	echo "== integration: done in $$((SECONDS - start))s"
	exit $$status

# The container image and the systemd unit (issue #14). A Docker engine that
# cannot be started is the script's to judge: a skip, or with CI=true a
# failure.
deploy:
	@scripts/docker-up.sh || echo "== deploy: no Docker engine could be started (see the docker-up: lines above)"
	scripts/deploy-test.sh

modules:
	@start=$$SECONDS
	status=0
	for m in $(MODULES); do
		if [ -f "$$m/run.sh" ]; then
			# A module that needs servers starts them itself.
			echo "== modules: $$m: run.sh test"
			(cd "$$m" && bash run.sh test) || status=1
			continue
		fi
		echo "== modules: $$m: go vet and go test $(TESTFLAGS)"
		(cd "$$m" && $(GO) vet ./...) || status=1
		(cd "$$m" && $(GO) test $(TESTFLAGS) $(BENCHFLAGS) ./...) || status=1
	done
	echo "== modules: done in $$((SECONDS - start))s"
	exit $$status

bench:
	@for m in . $(MODULES); do
		echo "== bench: $$m"
		(cd "$$m" && $(GO) test -run='^$$' -bench=. -benchtime=$(BENCHTIME) ./...)
	done

clean-containers:
	@ids=$$(docker ps -aq --filter label=org.wechatconf.integration)
	if [ -n "$$ids" ]; then docker rm -f $$ids; else echo "no integration containers left"; fi
