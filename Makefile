# telegate: the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
INFLUXDB_VERSION := v1.8.3
GOLANGCI_LINT_VERSION := v2.15.0
BIN := $(CURDIR)/bin
PKGS := ./...
# Packages with end-to-end tests against real InfluxDB / NATS need bin/influxd.
export INFLUXD := $(BIN)/influxd

.PHONY: all build run test test-mochi test-short test-dates test-long bench bench-100k soak influxd chromium generate generate-check lint fuzz clean

all: build

build: ## build the gateway and the fleet simulator into bin/
	$(GO) build -o $(BIN)/gateway ./cmd/gateway
	$(GO) build -o $(BIN)/firmware-sim ./cmd/firmware-sim

influxd: $(BIN)/influxd ## install the pinned InfluxDB server into bin/

$(BIN)/influxd:
	@echo ">> installing InfluxDB $(INFLUXDB_VERSION) into bin/ (first run only, about a minute)"
	GOBIN=$(BIN) GOFLAGS= $(GO) install github.com/influxdata/influxdb/cmd/influxd@$(INFLUXDB_VERSION)

run: build influxd ## start InfluxDB, the gateway (broker + embedded NATS) and a simulated fleet; Ctrl-C stops all
	@deploy/run.sh

test: influxd chromium lint generate-check ## every test, race detector on, real InfluxDB, NATS and Chromium
	$(GO) test -race -count=1 -timeout 18m $(PKGS)
	cd internal/third_party/mochi && $(GO) test -race -count=1 -timeout 5m -run TestTelegate . && $(GO) test -race -count=1 -timeout 5m ./packets/...

test-mochi: ## upstream's own tests of the patched mochi copy (timing-based: run on a quiet machine)
	cd internal/third_party/mochi && $(GO) test -count=1 -timeout 5m . ./packets/... ./hooks/... ./mempool/... ./system/...

test-short: ## unit tests only (go test -short): no InfluxDB, no Chromium; tests that need them skip
	$(GO) test -short -count=1 $(PKGS)

# Dates the services' injected clocks are pinned to by test-dates (never the
# system clock): winter and summer in both hemispheres, a leap day, Europe's
# DST switch days (an instant just before 01:00 UTC crosses the switch
# during the run) and a year end.
TEST_DATES ?= 2026-12-01 2027-01-15 2027-07-15 2028-02-29 2027-03-28 2027-03-28T00:59:30Z 2027-10-31T00:59:30Z 2026-12-31T23:59:30Z
DATE_E2E_RUN ?= TestServices|TestDashboard|TestHTTPSurfaces

test-dates: influxd ## services and services/dashboard e2e tests with the clock pinned to each of TEST_DATES
	@failed=""; for d in $(TEST_DATES); do \
		echo ">> TELEGATE_TEST_DATE=$$d"; \
		TELEGATE_TEST_DATE=$$d $(GO) test -race -count=1 -timeout 10m ./gateway/services/... ./gateway/dashboard/remotecmd/ || failed="$$failed $$d"; \
		TELEGATE_TEST_DATE=$$d $(GO) test -race -count=1 -timeout 15m -run '$(DATE_E2E_RUN)' ./internal/e2e/ || failed="$$failed $$d"; \
	done; \
	if [ -n "$$failed" ]; then echo ">> test-dates FAILED for:$$failed"; exit 1; fi; echo ">> test-dates: all dates passed"

chromium: ## install Debian's headless Chromium for the browser tests (root: apt-get)
	@deploy/install-chromium.sh

test-long: influxd ## the long versions of the fault tests
	TELEGATE_LONG=1 $(GO) test -race -count=1 -timeout 60m $(PKGS)

lint: $(BIN)/golangci-lint ## gofmt, go vet, then golangci-lint with .golangci.yml (cached in ~/.cache/golangci-lint)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(BIN)/golangci-lint run $(PKGS)

$(BIN)/golangci-lint:
	@echo ">> installing golangci-lint $(GOLANGCI_LINT_VERSION) into bin/ (first run only, a few minutes)"
	GOBIN=$(BIN) GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

generate: ## regenerate msgp code
	$(GO) generate ./decoders/...

generate-check: ## fail if committed generated code is stale
	@decoders/wire/gen_check.sh

bench: build influxd ## micro-benchmarks and the end-to-end benchmarks (figures: docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./decoders/... ./gateway/influx/ ./gateway/sink/influxsink/ ./gateway/spool/record/ ./gateway/ingest/topics/
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./gateway/spool/
	$(GO) test -run '^$$' -bench 'PublishQoS1|PolicyPublishPath' -benchmem ./broker/
	$(GO) test -run '^$$' -bench . -benchmem ./broker/listener/ ./gateway/ingest/
	cd internal/third_party/mochi && $(GO) test -run '^$$' -bench Telegate -benchmem .
	$(GO) test -run '^$$' -bench 'EndToEndQoS1' -benchtime 150000x -timeout 30m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'EndToEndDurability' -benchtime 100000x -timeout 30m ./internal/e2e/
	for n in 5000 10000 19000; do $(GO) test -run '^$$' -bench 'IdleConnections$$' -benchtime $${n}x -timeout 30m ./internal/e2e/ || exit 1; done
	$(MAKE) bench-100k
	$(GO) test -run '^$$' -bench 'ActiveVehicles' -benchtime 1x -timeout 30m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'VerifyCold/machine' -benchtime 100000x ./broker/registry/
	$(GO) test -run '^$$' -bench 'VerifyCold/bcrypt10' -benchtime 50x ./broker/registry/
	$(GO) test -run '^$$' -bench 'ColdAdmissionMachineHash' -benchtime 15000x -timeout 10m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'ColdAdmissionBcrypt10' -benchtime 100x -timeout 10m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'Dashboard1000' -benchtime 200x -timeout 30m ./internal/e2e/
	$(GO) test -run '^$$' -bench 'OCPPSessionStart' -benchtime 5000x ./gateway/ocpp/
	$(GO) test -run '^$$' -bench 'Claim' -benchtime 2000x ./gateway/cluster/presence/
	$(GO) test -run '^$$' -bench 'Drain' -benchtime 1x -timeout 20m ./broker/
	TELEGATE_E2E_BENCH=1 $(GO) test -run 'TestServicesTriggerLatency' -count=1 -v ./internal/e2e/ | grep -E 'latency|^(ok|FAIL|---)'

bench-100k: build influxd ## 100,000 idle device connections over 6 gateway replicas on a 3-node NATS cluster (~2.5 min, ~5 GiB host memory)
	$(GO) test -run '^$$' -bench 'IdleConnections100k' -benchtime 1x -v -timeout 45m ./internal/e2e/

soak: build influxd ## gateway under load + periodic faults (InfluxDB outage, kill -9, hostile connections); SOAK_DURATION=2m
	$(GO) run ./cmd/soak -gateway $(BIN)/gateway -influxd $(BIN)/influxd -duration $(or $(SOAK_DURATION),2m)

fuzz: ## run every fuzz target briefly
	@for t in $$($(GO) test -list 'Fuzz.*' ./decoders/wire/ | grep ^Fuzz); do \
	  $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime 15s ./decoders/wire/ || exit 1; done

clean:
	rm -rf var/ $(BIN)/gateway $(BIN)/firmware-sim

# Side by side with Mosquitto + Telegraf (docs/benchmarks.md). Not part of
# `make test`: it installs Debian's Mosquitto (root: apt-get) and builds
# Telegraf (about 15 minutes on 2 cores, first run only) into bin/.
TELEGRAF_VERSION := v1.37.2
.PHONY: bench-compare bench-compare-paced
bench-compare: build influxd $(BIN)/mosquitto $(BIN)/telegraf ## gateway vs Mosquitto+Telegraf vs direct writes, one InfluxDB, one table; BENCH_COMPARE_FLAGS=...
	$(GO) run ./cmd/bench-compare -influxd $(BIN)/influxd -gateway $(BIN)/gateway -telegraf $(BIN)/telegraf \
	  -mosquitto $(BIN)/mosquitto -mosquitto-passwd $(BIN)/mosquitto_passwd $(BENCH_COMPARE_FLAGS)

bench-compare-paced: build influxd $(BIN)/mosquitto $(BIN)/telegraf ## the same, paced: 500 devices at 10 Hz, with the floor of a do-nothing Go server
	$(MAKE) bench-compare BENCH_COMPARE_FLAGS="-clients 500 -rate 10 -frames 300 -pipelines floor,telegraf,gateway,gateway-batched $(BENCH_COMPARE_FLAGS)"

$(BIN)/mosquitto:
	@if [ ! -x /usr/sbin/mosquitto ]; then \
	  [ "$$(id -u)" = 0 ] || { echo "installing Mosquitto needs root (apt-get)"; exit 1; }; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto; fi
	ln -sf /usr/sbin/mosquitto $(BIN)/mosquitto
	ln -sf /usr/bin/mosquitto_passwd $(BIN)/mosquitto_passwd

$(BIN)/telegraf:
	@echo ">> building Telegraf $(TELEGRAF_VERSION) into bin/ (first run only, about 15 minutes on 2 cores)"
	GOBIN=$(BIN) GONOSUMDB=github.com/tdrn-org,github.com/SAP GOFLAGS= $(GO) install github.com/influxdata/telegraf/cmd/telegraf@$(TELEGRAF_VERSION)
