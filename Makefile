# Parley's two commands: `make run` and `make test`. Both run scripts/setup first, which
# installs what is missing (Debian packages, pgvector, livekit-server, livekit-sip, node
# modules) and is a quick no-op once everything is there.

GO       ?= go
# nolibopusfile: the LiveKit media SDK's opus binding without libopusfile (not needed).
GOFLAGS  += -tags=nolibopusfile
export GOFLAGS
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)

.PHONY: run test setup build bench clean

run: setup build
	./bin/parley dev $(ARGS)

test: setup
	$(GO) run ./internal/dbtest/pgrun -- $(GO) test -race -count=1 ./... $(TESTFLAGS)

setup:
	./scripts/setup

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/parley ./cmd/parley

clean:
	rm -rf bin
