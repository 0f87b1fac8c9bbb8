# A template for your own model: prune, tune under the mask, merge, verify, compress, evaluate, as file
# targets (a re-run does only what changed). Copy it, set the variables (or pass them on the command line):
#
#   make -f pipeline.mk MODEL=path/to/hf-checkpoint CALIBRATION=calib.txt DATA=train.jsonl HELDOUT=eval.txt
#
# Every stage writes into $(OUT); `make -f pipeline.mk clean` removes it. The verify stage fails the build
# when the tuned model lost a zero of the pruned base, breaks $(PATTERN) or holds a NaN, and writes a JUnit
# report ($(OUT)/verify.xml) for CI.

ESPALIER    ?= espalier
MODEL       ?= models/smollm2-135m
CALIBRATION ?= calibration.txt
DATA        ?= train.txt
HELDOUT     ?= heldout.txt
OUT         ?= out/$(notdir $(MODEL))
# Pruning: wanda, sparsegpt or magnitude; PATTERN N:M or SPARSITY for unstructured.
PRUNER      ?= wanda
PATTERN     ?= 2:4
SPARSITY    ?= 0.5
NSAMPLES    ?= 32
# Tuning: lors, lora (dense, for comparison: its merge needs --allow-densify), sqft or spp; each method's
# reference recipe is its default (espalier finetune --help).
METHOD      ?= lors
STEPS       ?= 150
SEQ_LEN     ?= 256
BATCH       ?= 4
FINETUNE    ?=
EVAL_WINDOWS ?= 48

SHAPE := $(if $(PATTERN),--pattern $(PATTERN),--sparsity $(SPARSITY))
CHECK := $(if $(PATTERN),--pattern $(PATTERN)) --sparsity $(SPARSITY)
EVAL  := --text $(HELDOUT) --seq-len $(SEQ_LEN) --limit $(EVAL_WINDOWS) --json

.PHONY: all clean
all: $(OUT)/eval-dense.json $(OUT)/eval-pruned.json $(OUT)/eval-tuned.json $(OUT)/verify.json $(OUT)/compressed/model.safetensors
	@for m in dense pruned tuned; do printf '%-8s perplexity %s\n' $$m "$$(sed -n 's/.*"perplexity": *\([0-9.]*\).*/\1/p' $(OUT)/eval-$$m.json)"; done

$(OUT)/pruned/model.safetensors: $(MODEL)/model.safetensors $(CALIBRATION)
	$(ESPALIER) prune $(MODEL) $(OUT)/pruned --method $(PRUNER) $(SHAPE) --calibration $(CALIBRATION) \
	  --nsamples $(NSAMPLES) --seq-len $(SEQ_LEN) --overwrite

$(OUT)/adapter/adapter_model.safetensors: $(OUT)/pruned/model.safetensors $(DATA)
	$(ESPALIER) finetune $(OUT)/pruned --data $(DATA) --output $(OUT)/adapter --method $(METHOD) --steps $(STEPS) \
	  --batch-size $(BATCH) --grad-accum 1 --seq-len $(SEQ_LEN) --overwrite $(FINETUNE)

$(OUT)/merged/model.safetensors: $(OUT)/adapter/adapter_model.safetensors
	$(ESPALIER) merge $(OUT)/pruned $(OUT)/adapter $(OUT)/merged --overwrite

$(OUT)/verify.json: $(OUT)/merged/model.safetensors
	$(ESPALIER) verify $(OUT)/merged --base $(OUT)/pruned --adapter $(OUT)/adapter $(CHECK) \
	  --junit $(OUT)/verify.xml --json > $@.tmp && mv $@.tmp $@

$(OUT)/compressed/model.safetensors: $(OUT)/verify.json
	$(ESPALIER) convert $(OUT)/merged $(OUT)/compressed --compress --overwrite

$(OUT)/eval-dense.json: $(MODEL)/model.safetensors $(HELDOUT)
	mkdir -p $(OUT)
	$(ESPALIER) eval $(MODEL) $(EVAL) > $@.tmp && mv $@.tmp $@

$(OUT)/eval-pruned.json: $(OUT)/pruned/model.safetensors $(HELDOUT)
	$(ESPALIER) eval $(OUT)/pruned $(EVAL) > $@.tmp && mv $@.tmp $@

$(OUT)/eval-tuned.json: $(OUT)/merged/model.safetensors $(HELDOUT)
	$(ESPALIER) eval $(OUT)/merged $(EVAL) > $@.tmp && mv $@.tmp $@

clean:
	rm -rf $(OUT)
