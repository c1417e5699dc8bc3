# Every target creates the virtual environment on first use, so on a fresh machine
# `make demo` and `make test` are the only commands needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this machine's disk; override e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0
SMOKE_ENV := PYROFLOWS_SMOKE=1 MPLBACKEND=Agg

.PHONY: install test test-unit test-notebooks lint format demo bench notebooks docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m ipykernel install --user --name pyroflows --display-name "pyroflows" >/dev/null
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check pyroflows tests benchmarks notebooks
	$(PY) -m ruff format --check pyroflows tests benchmarks

format: install
	$(PY) -m ruff format pyroflows tests benchmarks
	$(PY) -m ruff check --fix pyroflows tests benchmarks

test-unit: install
	$(PY) -m pytest tests pyroflows --doctest-modules -q --durations=15

test-notebooks: install
	$(SMOKE_ENV) $(PY) -m pytest --nbval-lax --nbval-current-env notebooks -q

test: lint test-unit test-notebooks

demo: install
	MPLBACKEND=Agg $(PY) -m pyroflows.demo

bench: install
	$(PY) benchmarks/speed.py

# The documentation site (MkDocs + Material) into site/; warnings are errors. The notebooks are
# rendered with their stored outputs, not executed.
docs: install
	NO_MKDOCS_2_WARNING=1 PYTHONPATH=$(CURDIR) $(PY) -m mkdocs build --strict

# Re-execute every notebook in full mode and store the outputs in place.
notebooks: install
	for nb in notebooks/*.ipynb; do \
		MPLBACKEND=Agg PYROFLOWS_PROGRESS=0 $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=3600 $$nb || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
