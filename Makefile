# tailguard Makefile. Every target works on a fresh machine with Go installed.

GO            ?= go
GOBIN         ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK_VERSION ?= v0.8.2
PKGS          ?= ./...
BENCHTIME     ?= 1s
TEST_TIMEOUT  ?= 20m
# SWEEP_DRAWS: draws per situation class in make bench's decision sweep.
SWEEP_DRAWS   ?= 20

.PHONY: all build test test-unit test-rules test-e2e bench bench-soak bench-scale test-kube-binaries lint fmt demo clean tools

all: build test

build:
	$(GO) build $(PKGS)
	$(GO) build -o bin/ ./cmd/...

## test: everything: unit tests with the race detector, rule tests, and the
## real-server end-to-end tests (hack/test-e2e installs Prometheus/Alertmanager
## on Debian or prints a SKIP line).
test: test-unit test-rules test-e2e

test-unit:
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	@hack/report-skips

## test-kube-binaries: build kube-apiserver and etcd once into the cache for
## the Kubernetes tests (about 20 minutes on 2 cores; later runs reuse them).
test-kube-binaries:
	@GO=$(GO) hack/build-kube

test-rules:
	@hack/test-rules

test-e2e:
	@GO=$(GO) hack/test-e2e

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)
	cd bench && $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...
	cd bench && $(GO) run ./cmd/awssim
	$(GO) run ./cmd/tailguard-sim bench
	$(GO) run ./cmd/tailguard-sim sweep --seeds $(SWEEP_DRAWS)

## bench-soak: the sidecar's RSS and CPU over an hour at a 15 s loop (real
## Prometheus, the shop under load); not part of make test.
bench-soak:
	@GO=$(GO) hack/bench-soak $(SOAK)

## bench-scale: the 10k-slice analysis, one sidecar over 1-100 services of
## 10-100 slices against a real Prometheus (promtool-written history), and
## the sidecar's 10-minute footprint, in one run; not part of make test.
bench-scale:
	@GO=$(GO) hack/bench-scale

lint: tools
	$(GO) vet $(PKGS)
	cd bench && $(GO) vet ./...
	$(GOBIN)/staticcheck $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

tools:
	@test -x $(GOBIN)/staticcheck && $(GOBIN)/staticcheck -version | grep -q '(0.8.2)' || \
		$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

fmt:
	gofmt -w $$(git ls-files '*.go')

demo:
	$(GO) run ./cmd/tailguard-sim demo

clean:
	rm -rf bin
