# imago: build and test. `make build` writes ./imago; `make test` is the full
# test suite (the one CI runs through .ci/run).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 5s

.PHONY: build test unit race fuzz-short vet fmt-check bench clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o imago ./cmd/imago

# The full suite: formatting, vet, unit + end-to-end tests under the race
# detector, and a short run of every fuzz target.
test: fmt-check vet race fuzz-short

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test ./...

race:
	$(GO) test -race -count=1 -timeout 25m ./...

fuzz-short:
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz-short.sh

bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

clean:
	rm -f imago
