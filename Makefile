# tapswitch — build, test and benchmark targets. See README.md.
GO       ?= go
BIN      ?= bin/tapswitch
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS  := -s -w -X main.version=$(VERSION)
# Bounded fuzzing per Fuzz target during `make test` (FUZZTIME=0 skips it).
FUZZTIME ?= 10s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The tests that skip under the race detector, which `make test` runs again
# without it, and the packages that have them.
NORACE_TESTS := NoAllocs$$|^TestMemory64Ports$$
NORACE_PKGS   = $(sort $(dir $(shell grep -rlE --include='*_test.go' -e '^func Test\w*NoAllocs\b' -e '^func TestMemory64Ports\b' .)))

.PHONY: all build run deps test unit fuzz soak bench bench-idle bench-mem bench-system lint cross clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tapswitch

# Run the switch with its default setup (see README.md); ARGS adds flags.
run: build
	$(BIN) serve $(ARGS)

# The Debian packages the tests use (installed when run as root).
deps:
	./tests/deps.sh

# Everything: vet, the whole suite under the race detector (privileged and
# end-to-end tests included when run as root), then each fuzz target for
# FUZZTIME.
test: deps build cross
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 25m ./...
	# Allocation counts and peak RSS, which the race detector inflates:
	# the tests that skip under -race, named *NoAllocs by convention (and
	# TestMemory64Ports), again without it, in every package that has one.
	$(GO) test -count=1 -run '$(NORACE_TESTS)' $(NORACE_PKGS)
	FUZZTIME=$(FUZZTIME) ./tests/fuzz.sh

unit:
	$(GO) test -race -count=1 ./switch/...

fuzz:
	FUZZTIME=$(FUZZTIME) ./tests/fuzz.sh

# Clients joining and leaving under traffic for SOAK (10m), with the race
# detector; not part of `make test`.
SOAK ?= 10m
soak:
	TAPSWITCH_SOAK=$(SOAK) $(GO) test -race -tags soak -run '^TestSoak$$' -count=1 -timeout 30m -v ./tests/

# Go benchmarks: the switch core, the stream transport, a tap's read side
# (root: it makes a namespace and a tap) and the socket load generator
# (see docs/performance.md).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./switch/... ./backend/stream/ ./backend/tap/ ./bench/loadgen/

# Stream and datagram throughput with and without 8 idle clients.
bench-idle:
	$(GO) run ./bench/loadgen/cmd/loadgen -rounds 7

# 64 ports and a full FDB: peak RSS.
bench-mem:
	$(GO) test -count=1 -run TestMemory64Ports -v ./bench/loadgen/

# Tap to tap and through two switches joined by a stream socket, against the
# kernel bridge and vde_switch (root, ~10 minutes: 7 modes x 3 rounds).
bench-system:
	bench/compare.sh -r HEAD

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags soak ./tests/
	$(GO) run $(STATICCHECK) ./...

# Every package, tests included, for macOS without cgo (as the macOS
# workflow's vet step sees them), then the cgo darwin packages type-checked
# with go/types (internal/cgocheck): Apple's SDK is not here.
cross:
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build ./...
	GOOS=darwin GOARCH=amd64 CGO_ENABLED=0 $(GO) build ./...
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) vet ./...
	GOOS=darwin GOARCH=amd64 CGO_ENABLED=0 $(GO) vet ./...
	$(GO) run ./internal/cgocheck -goos darwin -goarch arm64 ./cmd/tapswitch ./vmnet ./vz ./examples/vz
	$(GO) run ./internal/cgocheck -goos darwin -goarch amd64 ./cmd/tapswitch ./vmnet ./vz ./examples/vz

clean:
	rm -rf bin
