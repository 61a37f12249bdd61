# graylane — make test runs every check CI runs; make demo shows graylane in a real Traefik.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CACHE ?= $(or $(GRAYLANE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/graylane)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(CACHE)/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)
PLUGIN_PKGS := . ./mark ./dispatch
FUZZTIME ?= 5s
# Fuzzing runs on Go 1.27.3 (fetched by the go command from the module proxy, about 10 s once):
# Go 1.26's fuzz coordinator can report a spurious "context deadline exceeded" failure when
# -fuzztime ends while a worker is busy (go.dev/issue/75804, fixed in Go 1.27).
FUZZ_GO := GOTOOLCHAIN=go1.27.3 go

.PHONY: test check fmt-check vet lint unit fuzz-smoke fuzz yaegi race e2e traefik kube bench demo k8s-values clean

## test: every check — format, vet, lint, unit tests with the race detector, brief fuzzing,
## the plugin tests interpreted by Yaegi (also under the race detector), and the end-to-end tests
## in a real Traefik.
test: check unit fuzz-smoke yaegi race e2e

check: fmt-check vet lint

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...
	cd e2e && go vet ./...

$(GOLANGCI_LINT):
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) from the Go module proxy (a few minutes, once)"
	@mkdir -p $(CACHE)/bin
	@tmp=$$(mktemp -d) && GOBIN=$$tmp go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) && mv $$tmp/golangci-lint $@ && rmdir $$tmp

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...
	cd e2e && $(GOLANGCI_LINT) run ./...

unit:
	go test -race -count=1 ./...

# Runs every fuzz target of the plugin packages for FUZZTIME each (5s in make test).
fuzz-smoke:
	@for pkg in ./mark ./dispatch; do \
		for target in $$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$target for $(FUZZTIME)"; \
			$(FUZZ_GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## fuzz: the fuzz targets for longer (FUZZTIME=2m by default).
fuzz: FUZZTIME = 2m
fuzz: fuzz-smoke

yaegi:
	./scripts/yaegi-test.sh -v $(PLUGIN_PKGS)

# The plugins interpreted by Yaegi as Traefik's plugin loader builds them, with concurrent
# requests, under the race detector: it sees the interpreted code's memory accesses too.
race:
	cd e2e && go test -race -count=1 -run '^TestYaegiLoader$$' .

# The binaries first, so that a first run shows their (long) builds on their own.
e2e: traefik kube
	cd e2e && go test -count=1 -timeout 45m -v ./...

traefik:
	./scripts/build-traefik.sh

kube:
	./scripts/build-kube.sh

bench:
	./scripts/bench.sh

## demo: Traefik + graylane + three backends on 127.0.0.1, synthetic users, a hot reload (40 s).
demo:
	cd e2e && go run ./cmd/demo $(DEMO_FLAGS)

k8s-values:
	./scripts/gen-k8s-values.sh
