# Two commands on a fresh machine with Python and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

venv: $(STAMP)

DEMO_MODELS := examples/paper_codellama_b512.toml examples/vertex_c_kmax100.toml examples/llama2_7b_a100_azure_conv.toml

demo: $(STAMP)
	@for f in $(DEMO_MODELS); do $(VENV)/bin/fluidllm capacity $$f || exit $$?; echo; done
	@$(VENV)/bin/fluidllm region examples/vertex_c_kmax100.toml
	@echo
	@$(PY) scripts/demo_stability.py
	@echo
	@$(VENV)/bin/fluidllm paper --out report

test: $(TEST_STAMP)
	$(PY) -m pytest -q
	$(PY) -m proofs_checks

$(VENV)/.installed-bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/capacity_speed.py
	$(PY) benchmarks/sim_speed.py
	$(PY) benchmarks/markov_size.py
	$(PY) benchmarks/network_lp_scale.py

clean:
	rm -rf $(VENV) build *.egg-info
