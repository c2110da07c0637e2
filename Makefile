# The README's two commands are `make run` and `make test`; both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SLMESH := $(VENV)/bin/slmesh
STAMP := $(VENV)/.installed

.PHONY: install run down test conformance protos protos-check bench conversion clean

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

bench: install
	$(SLMESH) bench hop

clean:
	rm -rf $(VENV) .slmesh .pytest_cache
