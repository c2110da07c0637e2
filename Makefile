# The README's two commands are `make run` and `make test`; both build their own virtualenv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SLMESH := $(VENV)/bin/slmesh
STAMP := $(VENV)/.installed

.PHONY: install run down test protos protos-check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[slm,planner,ui,dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default (SQLite, in-process registry store, no external services).
run: install
	$(SLMESH) down >/dev/null
	$(SLMESH) up --detach
	$(SLMESH) agents
	$(SLMESH) send classifier "Where is my order ORD-621221? It still hasn't arrived."
	$(SLMESH) send extractor "Hi, this is Aisha Okafor. Please refund 19.99 EUR on ORD-621221, the strap snapped."
	$(SLMESH) send tools --data '{"name": "get_order", "arguments": {"order_id": "ORD-621221"}}'
	$(SLMESH) send tools --binding JSONRPC --data '{"name": "find_orders", "arguments": {"email": "kofi.haddad@example.net"}}'
	$(SLMESH) send tools --binding HTTP+JSON --data '{"name": "track_shipment", "arguments": {"order_id": "ORD-317970"}}'
	@echo "--- a malformed call is rejected with the schema errors (exit code 1 is expected):"
	-$(SLMESH) send tools --data '{"name": "refund_order", "arguments": {"order_id": "621221", "amount": -5}}'
	@echo "The mesh keeps running: try '$(SLMESH) agents' or '$(SLMESH) send tools --data ...'; stop it with 'make down'."

down: install
	$(SLMESH) down

test: install
	$(PY) -m pytest -q

protos: install
	$(PY) -m mesh.proto._generate

protos-check: install
	$(PY) -m mesh.proto._generate --check

bench: install
	$(SLMESH) bench hop

clean:
	rm -rf $(VENV) .slmesh .pytest_cache
