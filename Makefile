# The two commands (see README.md):
#   make up      install what is missing, build, start what exists
#   make check   install what is missing, build with warnings as errors,
#                run every test, then the same tests under ASan + UBSan
# Others: make build, make test, make asan, make bench (bench-http,
# bench-gateway, bench-bus, bench-checkout, bench-chat), make down, make format.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps build test asan check docs up down bench bench-http bench-gateway bench-bus bench-checkout bench-chat format clean

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

check: test asan

# docs/api.md's operation tables from the services' OpenAPI documents.
docs:
	@python3 tests/docs/apigen.py

up: build
	@BUILD=$(BUILD) scripts/up

down:
	@BUILD=$(BUILD) scripts/down

bench: bench-http bench-gateway bench-bus bench-checkout bench-chat

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

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) compile_commands.json
