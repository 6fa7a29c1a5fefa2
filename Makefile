# The two commands of the README: `make demo` (encode the sample image, decode
# it, print size and PSNR) and `make test`. Each sets up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := pyproject.toml CMakeLists.txt $(shell find cpp cuda src -type f -not -name '*.pyc' 2>/dev/null)

.PHONY: demo test bench test-asan fuzz clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The codec alone: numpy, pillow, zstandard (no torch).
$(VENV)/.core: $(PY) $(SOURCES)
	$(PY) -m pip install -q .
	touch $@

# Tests also need the dev and clip extras (torch + open_clip_torch).
$(VENV)/.dev: $(PY) $(SOURCES)
	$(PY) -m pip install -q ".[dev,clip]"
	touch $@

demo: $(VENV)/.core
	$(PY) examples/demo.py

# The suite, then the CUDA kernels' logic on the CPU emulator (cuda/emu/, see
# docs/gpu.md): machines without a GPU still run the small `gpu` tests that way.
EMU_TESTS := not psnr_matches_cpu and not 4096 and not mixed_size

# ... then the hardening runs of issue 9: the CPU core's tests under ASan +
# UBSan and a short coverage-guided fuzz run.
test: $(VENV)/.dev
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) cuda/emu/build.py build/emu
	PYTHONPATH=build/emu $(PY) -m pytest -q -p no:cacheprovider -m gpu \
		python/tests/test_cuda.py python/tests/test_gradients.py python/tests/test_hostile.py \
		python/tests/test_encoder_v2.py -k "$(EMU_TESTS)"
	$(MAKE) test-asan fuzz

# The CPU core built with -DGSCODEC_SANITIZE=ON (CMakeLists.txt) in a venv of
# its own (the codec, the dev extra and torch for the tests' reference twin). The module links no
# sanitizer runtime: gcc's is preloaded for the tests, atheris' for the fuzzers
# (so, as the install checks, it cannot load without one: it is instrumented).
ASAN_DIR ?= build/asan
ASAN_VENV := $(ASAN_DIR)/venv
ASAN_PY := $(ASAN_VENV)/bin/python
ASAN_ENV := LD_PRELOAD="$(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ASAN_TESTS := $(addprefix python/tests/,test_render.py test_fit.py test_format.py \
	test_gradients.py test_bad_input.py test_format_fuzz.py test_fuzz_harnesses.py \
	test_encoder_v2.py)

$(ASAN_VENV)/.installed: $(SOURCES)
	python3 -m venv $(ASAN_VENV)
	$(ASAN_PY) -m pip install -q --upgrade pip
	$(ASAN_PY) -m pip install -q ".[dev,clip]" -Ccmake.define.GSCODEC_SANITIZE=ON \
		-Ccmake.define.GSCODEC_CUDA=OFF -Cbuild-dir=$(ASAN_DIR)/cmake
	! $(ASAN_PY) -c "import gscodec._core" 2>/dev/null  # instrumented: needs a preloaded runtime
	touch $@

# Python leaks by design (detect_leaks=0); any UBSan report stops the run.
test-asan: $(ASAN_VENV)/.installed
	$(ASAN_ENV) $(ASAN_PY) -m pytest -q -p no:cacheprovider $(ASAN_TESTS)

# Each atheris harness of python/fuzz/ for FUZZ_SECONDS; a finding fails and
# prints its reproducer's path.
FUZZ_SECONDS ?= 100
fuzz: $(ASAN_VENV)/.installed
	python/fuzz/run.sh $(ASAN_PY) open_render $(FUZZ_SECONDS) build/fuzz
	python/fuzz/run.sh $(ASAN_PY) from_array_render $(FUZZ_SECONDS) build/fuzz

clean:
	rm -rf build $(VENV)
