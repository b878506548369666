# The two set-up commands (README): `make run` and `make test`. Both idempotent.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
MODEL ?= smollm2-135m
CITADEL = $(BUILD)/citadel

.PHONY: all deps configure build test run clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: deps configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	scripts/test.sh $(BUILD)

run: build
	scripts/run.sh $(BUILD) $(MODEL)

clean:
	rm -rf $(BUILD)
