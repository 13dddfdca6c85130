# Two entry points: `make demo` (the main job on built-in data) and `make test`. Both install what they need.
# VENV may live outside the checkout (CI keys it by a hash of pyproject.toml so clones reuse it).
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO_DATA ?= data/demo
PYTEST_ARGS ?= -m "not slow"

.PHONY: install demo test test-all clean

$(DEPS): pyproject.toml
	@ldconfig -p | grep -q libsndfile.so.1 || (apt-get update -qq && apt-get install -y -qq libsndfile1)
	test -x $(PY) || python3.11 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Re-point the (possibly shared) environment at this checkout; dependencies are already in place.
install: $(DEPS)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .

demo: install
	$(PY) -m ssast.data.demo --root $(DEMO_DATA) --scale full

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: PYTEST_ARGS =
test-all: test

clean:
	rm -rf runs data/demo .pytest_cache
