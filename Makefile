# flagwatch — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin
# Tests run in parallel packages; 2 cores are the reference machine.
TEST_FLAGS ?= -count=1 -timeout 14m -p 2
# The embedded ClickHouse (libchdb), fetched by scripts/deps.sh into .cache/chdb.
CHDB_LIB_PATH ?= $(CURDIR)/.cache/chdb/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so
export CHDB_LIB_PATH

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install what the tests need: the embedded ClickHouse (npm), ClickHouse 18.16, kcat, docker-compose, chromium (apt)
	@scripts/deps.sh test

.PHONY: build
build: ## build the four services into bin/
	$(GO) build -o bin/ ./cmd/...

.PHONY: demo
demo: build ## the whole story end to end on the embedded default (in-process Kafka + embedded ClickHouse 26)
	@scripts/deps.sh demo
	@scripts/demo.sh

.PHONY: test
test: deps ## vet, check formatting and compose, and run every test on ClickHouse 18.16 and on the embedded ClickHouse 26
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	docker-compose -f deploy/compose/docker-compose.yml config -q
	docker-compose -f deploy/compose-cluster/docker-compose.yml config -q
	GO="$(GO)" GO_TEST_FLAGS="$(TEST_FLAGS)" scripts/test.sh

.PHONY: test-cluster
test-cluster: deps ## the cluster tests alone: ZooKeeper and 2 shards × 2 replicas of ClickHouse 18.16 on this machine
	@scripts/cluster.sh install
	scripts/with-clickhouse.sh $(GO) test $(TEST_FLAGS) -run 'Cluster|ZooKeeper|ReplicaKills' ./pipeline/...

.PHONY: lint
lint: ## gofmt, go vet, go mod tidy check
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(GO) mod tidy -diff

.PHONY: bench
bench: bench-ingest bench-analyzer bench-capture bench-web bench-go ## every benchmark

.PHONY: bench-go
bench-go: ## in-process Go benchmarks (statistics, decoding, capture handler)
	$(GO) test -run '^$$' -bench . -benchmem ./pipeline/stats/ ./pipeline/event/ ./pipeline/capture/

.PHONY: bench-ingest
bench-ingest: deps ## ingest (with and without the join) vs ClickHouse's Kafka engine on the same topic; the flag-density sweep (1, 4, 20, 50 flags per event); one node vs two shards
	$(GO) test -run '^$$' -bench BenchmarkIngest -benchtime 1x -timeout 60m -v ./pipeline/ingest/
	@scripts/cluster.sh install
	$(GO) test -run '^$$' -bench BenchmarkIngestOneNodeVsTwoShards -benchtime 1x -timeout 30m -v ./pipeline/clustertest/

.PHONY: bench-analyzer
bench-analyzer: deps ## analyzer passes (incremental, from scratch, rebuild) vs one plain scan, and vs the same pass with configured segments only and with no segments (property discovery's cost), on ClickHouse 18.16 and on the embedded 26
	@echo "== analyzer on a ClickHouse 18.16 server"
	$(GO) test -run '^$$' -bench BenchmarkAnalyzerPass -benchtime 1x -timeout 120m -v ./pipeline/analyze/
	@echo "== analyzer on the embedded ClickHouse 26"
	FLAGWATCH_TEST_ENGINE=embedded $(GO) test -run '^$$' -bench BenchmarkAnalyzerPass -benchtime 1x -timeout 120m -v ./pipeline/analyze/

.PHONY: bench-web
bench-web: deps ## the flags list and a flag page over a month of 15-minute passes of 50 flags (budget 200 ms each)
	scripts/with-clickhouse.sh $(GO) test -run '^$$' -bench BenchmarkPages -benchtime 20x -timeout 30m -v ./pipeline/web/

.PHONY: bench-capture
bench-capture: ## capture under wrk load
	@scripts/deps.sh --bench
	pipeline/capture/bench.sh

.PHONY: soak
soak: ## not in CI: capture and ingest (the binaries) under 3 minutes of valid, hostile and oversized requests, ingest SIGKILLed twice; checks RSS, exactly-once storage, reasons (FLAGWATCH_SOAK_DURATION, _RATE, _SEED)
	scripts/with-clickhouse.sh $(GO) test -tags soak -run '^TestSoak$$' -count=1 -timeout 0 -v ./pipeline/soak/

.PHONY: fuzz
fuzz: ## fuzz the event decoder (and its fast path), time placement, the segment scanner and capture's request decoding, a minute each
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 60s ./pipeline/event/
	$(GO) test -run '^$$' -fuzz '^FuzzFastPathAgrees$$' -fuzztime 60s ./pipeline/event/
	$(GO) test -run '^$$' -fuzz '^FuzzPlace$$' -fuzztime 60s ./pipeline/event/
	$(GO) test -run '^$$' -fuzz '^FuzzSegmentProps$$' -fuzztime 60s ./pipeline/event/
	$(GO) test -run '^$$' -fuzz '^FuzzCaptureRequest$$' -fuzztime 60s ./pipeline/capture/
