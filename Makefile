# The two commands of the README: `make demo` (encode the sample image, decode
# it, print size and PSNR) and `make test`. Each sets up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
SOURCES := pyproject.toml CMakeLists.txt $(shell find cpp cuda src -type f -not -name '*.pyc' 2>/dev/null)

.PHONY: demo test bench clean

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

test: $(VENV)/.dev
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) cuda/emu/build.py build/emu
	PYTHONPATH=build/emu $(PY) -m pytest -q -p no:cacheprovider -m gpu python/tests/test_cuda.py -k "$(EMU_TESTS)"

clean:
	rm -rf build $(VENV)
