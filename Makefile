# The two commands (see README.md):
#   make up      install what is missing, build, start what exists
#   make check   install what is missing, build with warnings as errors,
#                run every test, then the same tests under ASan + UBSan
# Others: make build, make test, make asan, make bench (bench-http,
# bench-gateway, bench-bus, bench-checkout, bench-chat, bench-grpc), make soak (an hour of
# mixed traffic, memory sampled: scripts/soak), make down, make format.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz

.PHONY: all deps build test asan fuzz fuzz-smoke fuzz-build check docs up down soak bench bench-http bench-gateway bench-bus bench-checkout bench-chat bench-grpc format clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGORA_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@ln -sf $(BUILD)/compile_commands.json compile_commands.json

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DAGORA_SANITIZE=ON -DAGORA_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  AGORA_TEST_SANITIZED=1 ctest --output-on-failure -j $(JOBS)

check: test asan fuzz-smoke

# The libFuzzer harnesses of tests/fuzz (clang): `make fuzz` runs each for
# FUZZ_SECONDS (60); `make check` runs each for 3 s from its seed corpus.
fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DAGORA_FUZZ=ON -DAGORA_WERROR=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) --target fuzzers -j $(JOBS)

fuzz: fuzz-build
	@FUZZ_BUILD=$(abspath $(FUZZ_BUILD)) FUZZ_SECONDS=$${FUZZ_SECONDS:-60} tests/fuzz/run

fuzz-smoke: fuzz-build
	@FUZZ_BUILD=$(abspath $(FUZZ_BUILD)) FUZZ_SECONDS=3 tests/fuzz/run

# docs/api.md's operation tables from the services' OpenAPI documents.
docs:
	@python3 tests/docs/apigen.py

up: build
	@BUILD=$(BUILD) scripts/up

down:
	@BUILD=$(BUILD) scripts/down

soak: build
	@BUILD=$(BUILD) scripts/soak

bench: bench-http bench-gateway bench-bus bench-checkout bench-chat bench-grpc

bench-http: build
	@scripts/install-deps bench
	@bench/http/run

bench-gateway: build
	@scripts/install-deps bench
	@bench/gateway/run

bench-bus: build
	@bench/bus/run

bench-checkout: build
	@AGORA_BUILD=$(abspath $(BUILD)) bench/checkout/run

bench-chat: build
	@AGORA_BUILD=$(abspath $(BUILD)) bench/chat/run

bench-grpc: build
	@AGORA_BUILD=$(abspath $(BUILD)) bench/grpc/run

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) compile_commands.json
