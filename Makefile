# The README's two commands are `make run` and `make test`; both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SLMESH := $(VENV)/bin/slmesh
STAMP := $(VENV)/.installed

.PHONY: install run down test lint typecheck conformance protos protos-check bench conversion lock clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[slm,planner,ui,dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (SQLite, in-process registry store, local Ray, no
## external services): start the mesh, send the demo batch through the planner, leave it running.
run: install
	$(SLMESH) down >/dev/null
	$(SLMESH) up --detach
	$(SLMESH) run --file demo/support_messages.txt
	@echo "The mesh keeps running: try '$(SLMESH) run \"Where is my order ORD-317970?\"', '$(SLMESH) agents',"
	@echo "'$(SLMESH) trace TASK_ID'; stop it with 'make down'."

## The LLM-to-SLM conversion loop end to end (record, cluster, train a LoRA student, deploy,
## route SLM-first); writes the Demonstration section of docs/conversion.md.
conversion: install
	$(SLMESH) convert demo

down: install
	$(SLMESH) down

test: install
	$(PY) -m pytest -q --durations=15

## Static checks, CI's gates before the tests: ruff's rules and formatting, mypy over mesh/
## (strict for mesh/a2a, mesh/registry, mesh/planner, mesh/config.py; see pyproject.toml).
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy

## The official A2A TCK (pinned at ../shared/a2a-tck; TCK=PATH for another copy) against the
## mesh runtime, two replicas on PostgreSQL and stock a2a-sdk; fails on any MUST or SHOULD
## failure of the mesh (docs/conformance.md: scores, waivers, skipped tests).
TCK ?= ../shared/a2a-tck
conformance: install
	$(PY) -m tests.conformance.run --tck $(TCK)

protos: install
	$(PY) -m mesh.proto._generate

protos-check: install
	$(PY) -m mesh.proto._generate --check

## The images' hash-pinned dependency sets, deploy/requirements/{base,slm,planner}.txt (pip-tools),
## torch left out: the image installs it in its own step from TORCH_INDEX_URL. Kept pins stay
## (UPGRADE=1 moves every one to the newest allowed); TORCH_INDEX_URL=<the CPU wheel index> locks
## torch's own dependencies for its CPU build (PyPI's torch is the CUDA one, with nvidia-* wheels).
LOCKS := deploy/requirements
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" \
	$(if $(TORCH_INDEX_URL),PIP_EXTRA_INDEX_URL="$(TORCH_INDEX_URL)") \
	$(PY) -m piptools compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	--no-emit-find-links --unsafe-package torch --unsafe-package slmesh $(if $(UPGRADE),--upgrade) \
	pyproject.toml

lock: install
	mkdir -p $(LOCKS)
	$(PIP_COMPILE) --output-file $(LOCKS)/base.txt
	$(PIP_COMPILE) --extra slm --output-file $(LOCKS)/slm.txt
	$(PIP_COMPILE) --extra planner --output-file $(LOCKS)/planner.txt
	# torch and slmesh itself, listed as unpinned at the end by pip-compile: dropped.
	sed -i '/^# WARNING: The following packages were not pinned/,$$d' $(LOCKS)/*.txt

bench: install
	$(SLMESH) bench hop

clean:
	rm -rf $(VENV) .slmesh .pytest_cache .mypy_cache .ruff_cache
