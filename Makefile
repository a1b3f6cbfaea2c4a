# weft — see README.md. Every target runs as root on a fresh Debian machine.
SHELL      := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH)
GO         ?= go
TAG        ?= dev
REGISTRY   ?=
FUZZTIME   ?= 30s
BENCHTIME  ?= 2s
BENCHCOUNT ?= 5
OUT        := _output
KUBECONFIG_E2E := $(CURDIR)/$(OUT)/cluster/kubeconfig
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS    := -s -w -X github.com/weftmesh/weft/internal/version.Version=$(VERSION)
# grpcnotrace: gRPC without golang.org/x/net/trace (and the html/template it
# pulls in), which weft never enables: 2.3 MB less binary, 2.1 MB less RSS
# in every sidecar. test/cluster/images.sh builds with the same tags.
BUILDTAGS  := grpcnotrace
BINARIES   := $(notdir $(wildcard cmd/*))

.PHONY: all build test test-vm race e2e e2e-suite demo conformance bench fuzz mutate lint cluster-up cluster-down cluster-build images clean chart chart-test helm-e2e

all: build

## build: static binaries of every program into _output/bin
build:
	@mkdir -p $(OUT)/bin
	CGO_ENABLED=0 $(GO) build -trimpath -tags '$(BUILDTAGS)' -ldflags '$(LDFLAGS)' -o $(OUT)/bin/ ./cmd/...

## test: every unit and integration test, with the race detector (the sidecar's data path also without it), and the bench harness's self-check
test:
	$(GO) test -race -count=1 ./...
	@# The sidecar's raw socket calls (internal/rawio) are the syscall package's under -race: once more without it.
	$(GO) test -count=1 ./internal/rawio/ ./sidecar/proxy/ ./sidecar/l7/
	cd sidecar/proxy/bench && python3 -m unittest -q
	cd hack/mutate && $(GO) test -count=1 ./...

## test-vm: TestTenThousandConnections with all 10,000 connections, in a KVM virtual machine (hack/vmtest; needs hardware KVM)
test-vm:
	hack/vmtest/run.sh

## lint: gofmt, go vet, and hack/mutate/equivalent.txt against the code
lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^test/cluster/\(tools\|coredns\)/')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/e2e/...
	$(GO) vet -tags helm ./deploy/
	cd test/conformance && $(GO) vet -tags conformance .
	cd hack/mutate && $(GO) vet ./...
	@# Each equivalent mutant still names an operator at its position (code moves).
	cd hack/mutate && $(GO) run ./uncovered -equivalent equivalent.txt -dir ../..

## fuzz: each fuzz target for FUZZTIME (go test runs their seeds always)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

## mutate: mutation testing (gremlins) of the packages that hold a guarantee; report in docs/mutation.md (slow: not in CI)
## (gremlins mutates a path and everything below it: controlplane/xds covers translate and ads, sidecar/xds its model)
MUTATE_PKGS ?= sidecar/proxy internal/rawio sidecar/xds sidecar/egress sidecar/balance sidecar/l7 controlplane/xds controlplane/identity controlplane/audit certs injector
MUTATE_WORKERS ?= 2
mutate:
	@mkdir -p $(OUT)/mutate/uncovered $(OUT)/bin
	cd hack/mutate && $(GO) build -o $(CURDIR)/$(OUT)/bin/gremlins github.com/go-gremlins/gremlins/cmd/gremlins
	cd hack/mutate && $(GO) build -o $(CURDIR)/$(OUT)/bin/uncovered ./uncovered
	@set -e; for p in $(MUTATE_PKGS); do \
	  n=$$(echo $$p | tr / _); rm -f $(OUT)/mutate/uncovered/$$n.json; \
	  echo "== mutate $$p"; \
	  GOFLAGS=-count=1 $(OUT)/bin/gremlins unleash --workers $(MUTATE_WORKERS) --timeout-coefficient 4 \
	    --exclude-files '(^|/)bench/' --exclude-files '_test\.go$$' \
	    -o $(CURDIR)/$(OUT)/mutate/$$n.json ./$$p; \
	  echo "== uncovered $$p: the mutants gremlins marked NOT COVERED, each applied and tested"; \
	  $(OUT)/bin/uncovered -coefficient 4 -min-timeout 30s -in $(CURDIR)/$(OUT)/mutate/$$n.json -dir ./$$p \
	    -out $(CURDIR)/$(OUT)/mutate/uncovered/$$n.json; \
	done
	cd hack/mutate && $(GO) run ./report -in $(CURDIR)/$(OUT)/mutate -uncovered $(CURDIR)/$(OUT)/mutate/uncovered \
	  -out $(abspath $(or $(MUTATE_REPORT),docs/mutation.md)) \
	  -equivalent $(CURDIR)/hack/mutate/equivalent.txt -machine "$$(nproc) cores, $$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

## bench: benchmarks with their in-run baselines; compare runs with benchstat
bench:
	@mkdir -p $(OUT)
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) -count=$(BENCHCOUNT) ./... | tee $(OUT)/bench.txt

## cluster-build: the local cluster's upstream binaries (cached in _output/bin)
cluster-build:
	test/cluster/build.sh

## cluster-up / cluster-down: a real single-node Kubernetes on this machine
cluster-up:
	test/cluster/up.sh

cluster-down:
	test/cluster/down.sh

## images: weft's images as tars imported into the local cluster, or pushed to REGISTRY
images:
	TAG=$(TAG) REGISTRY=$(REGISTRY) VERSION=$(VERSION) test/cluster/images.sh

## e2e: the end-to-end suite (e2e-suite), then weft installed with helm (helm-e2e), each on a cluster of its own
e2e: e2e-suite helm-e2e

## e2e-suite: cluster up, images, weft installed, end-to-end tests, cluster down (always)
e2e-suite:
	@rc=0; \
	test/cluster/up.sh && TAG=$(TAG) VERSION=$(VERSION) test/cluster/images.sh && TAG=$(TAG) test/cluster/images.sh traefik && \
	KUBECONFIG=$(KUBECONFIG_E2E) WEFT_TAG=$(TAG) WEFT_ARTIFACTS=$(CURDIR)/$(OUT)/e2e-artifacts \
	  $(GO) test -tags e2e -count=1 -timeout 30m -v ./test/e2e/... || rc=$$?; \
	test/cluster/down.sh || rc=$$((rc ? rc : 1)); \
	test/cluster/leftovers.sh || rc=$$((rc ? rc : 1)); \
	exit $$rc

## chart: regenerate the Helm chart charts/weft from deploy/ (deploy's TestChartInSync fails until it is run)
chart:
	$(GO) run ./hack/genchart

## chart-test: charts/weft rendered by the real helm (test/cluster/build.sh helm) against weftctl install, object by object, for each value; the schema refuses what install refuses; helm lint --strict
chart-test:
	test/cluster/build.sh helm
	$(GO) test -tags helm -count=1 -run Helm -v ./deploy/

## helm-e2e: cluster up, images, weft installed from charts/weft with helm (a pod injected and SYNCED), helm uninstall, nothing left; then the kubectl-apply path; cluster down (always)
helm-e2e:
	test/cluster/build.sh helm
	@rc=0; \
	test/cluster/up.sh && TAG=$(TAG) VERSION=$(VERSION) test/cluster/images.sh && \
	TAG=$(TAG) VERSION=$(VERSION) test/cluster/helm-smoke.sh || rc=$$?; \
	test/cluster/down.sh || rc=$$((rc ? rc : 1)); \
	test/cluster/leftovers.sh || rc=$$((rc ? rc : 1)); \
	exit $$rc

## conformance: the Gateway API's conformance suite (mesh profiles) against weft on the local cluster; report in test/conformance/reports/
conformance:
	TAG=$(TAG) VERSION=$(VERSION) test/conformance/run.sh

## demo: the newcomer's tour: local cluster (or $$KUBECONFIG's), weft installed, examples/demo applied, encryption verified
demo:
	TAG=$(TAG) VERSION=$(VERSION) hack/demo.sh

clean:
	rm -rf $(OUT)/bin/weft* $(OUT)/images $(OUT)/e2e-artifacts
