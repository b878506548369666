# The two set-up commands (README): `make run` and `make test`. Both idempotent.
#   make run    builds only the server binary (unity build; CUDA only where a GPU is present, or with CUDA=ON), then
#               serves MODEL
#   make test   builds everything, file by file (the CUDA backend too where the toolkit is installed) and runs every test
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
MODEL ?= smollm2-135m
CITADEL = $(BUILD)/citadel
# run: the CUDA backend only where a GPU is present (or CUDA=ON); test: wherever CMake finds a CUDA compiler
# (-U: the choice `make run` left in the cache is re-made).
CUDA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo ON || echo OFF)
CONFIGURE = cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -Wno-dev --log-level=WARNING

.PHONY: all build test run clean

all: build

build:
	@scripts/install-deps.sh test
	$(CONFIGURE) -DCITADEL_TESTS=ON -DCMAKE_UNITY_BUILD=OFF -UCITADEL_CUDA $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

test: build
	scripts/test.sh $(BUILD)

run:
	@scripts/run.sh $(BUILD) $(MODEL) $(CUDA) "$(CMAKE_FLAGS)" $(JOBS)

clean:
	rm -rf $(BUILD)
