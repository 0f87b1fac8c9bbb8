# Espalier: the front door. `make test` on a fresh machine installs what it needs, builds once in
# release mode and runs every test; `make demo` shows the tools on a real checkpoint.

SWIFT       ?= swift
BUILD       := .build/release
APT_PACKAGES := libopenblas-dev liblapacke-dev libhdf5-dev libzstd-dev pkg-config
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON      ?= python3

.PHONY: deps build test demo bench bench-data fixtures fuzz fuzz-build clean

deps: ## install the Debian -dev packages (BLAS, LAPACKE, HDF5, zstd) when missing
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps ## build every tool in release mode
	$(SWIFT) build -c release

test: deps ## build once in release mode and run all tests (tools are tested as binaries)
	$(SWIFT) test -c release

demo: build ## inspect the committed tiny Llama checkpoint (the SmolLM2 demo arrives with the GGUF reader)
	$(BUILD)/espalier inspect fixtures/tiny-llama
	$(BUILD)/espalier inspect fixtures/tiny-llama --pattern 2:4 --json | head -n 20

bench: build ## run the benchmarks and print the figures recorded in bench/RESULTS.md
	bash bench/run.sh

fixtures: ## regenerate the committed goldens (needs: pip install -r fixtures/requirements.txt)
	$(PYTHON) fixtures/make_dtype_goldens.py
	$(PYTHON) fixtures/make_safetensors_files.py
	$(PYTHON) fixtures/make_tiny_llama.py

fuzz-build: deps ## build the libFuzzer target for the safetensors reader into fuzz/bin
	bash fuzz/build.sh

fuzz: fuzz-build ## fuzz the safetensors reader (FUZZ_SECONDS, default 600)
	bash fuzz/run.sh $${FUZZ_SECONDS:-600}

clean: ## remove build outputs
	rm -rf .build fuzz/bin bench/out
