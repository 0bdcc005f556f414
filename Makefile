# Two commands on a fresh machine with Python and make: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test venv clean bench browser

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

# The HTML report's test opens its page in a real headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the browser test (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; } \
	  || echo "could not install chromium: the browser test will fail; apt-get install -y chromium"; }

# Two pytest processes on the two cores (pytest-xdist); proofs_checks then use both cores themselves.
test: $(TEST_STAMP) browser
	$(PY) -m pytest -q -n 2
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
