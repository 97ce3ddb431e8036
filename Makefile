# Everything runs from a project-local virtual environment that `make install` creates.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# ib_async (API versions up to 178) lives apart: it ships an `eventkit` that clashes with
# ib_insync's. The tests run it as a subprocess against the simulator.
COMPAT_VENV  ?= .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
# the client package alone (no server dependency), as a user installs it: the tests run the
# examples with it and type-check them under mypy
CLIENT_DIR   := client_stubs/python
CLIENT_VENV  ?= .venv-client
CLIENT_STAMP := $(CLIENT_VENV)/.installed
CLIENT_FILES := $(CLIENT_DIR)/pyproject.toml $(shell find $(CLIENT_DIR)/ibgateway -name '*.py' -o -name '*.pyi' -o -name py.typed)

.PHONY: install compat client node node-stubs go-stubs java-stubs run sim test fuzz lint proto buf bench bench-scale clean

PROTOS    := $(wildcard protos/ibgateway/v1/*.proto)
STUBS_DIR := client_stubs/python
BUF       := .tools/node_modules/.bin/buf
BUF_VERSION := 1.75.0

install: $(STAMP)

$(STAMP): pyproject.toml $(CLIENT_DIR)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e $(CLIENT_DIR)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## the ib_async compatibility venv used by tests/e2e/simulator/test_ib_async_compat.py
compat: $(COMPAT_STAMP)

$(COMPAT_STAMP): Makefile
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet 'ib_async>=2,<3' 'pytest>=8,<10' 'pandas>=2.2,<4'
	touch $(COMPAT_STAMP)

## the client package in a virtual environment of its own (used by the tests; `make client`)
client: $(CLIENT_STAMP)

$(CLIENT_STAMP): $(CLIENT_FILES)
	$(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/python -m pip install --quiet './$(CLIENT_DIR)[typing]' 'mypy>=1.11,<3'
	touch $(CLIENT_STAMP)

## the Node client (client_stubs/node): npm packages, then the TypeScript built into dist/
## (the test suite runs its example against a real gateway; skipped where npm is missing)
NODE_DIR   := client_stubs/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
NODE_BUILT := $(NODE_DIR)/dist/.built

node: $(NODE_BUILT)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@if command -v npm >/dev/null; then \
	    npm ci --silent --no-audit --no-fund --prefix $(NODE_DIR) && touch $(NODE_STAMP); \
	else echo "npm not found: the Node client is not built (its test is skipped)"; fi

$(NODE_BUILT): $(NODE_STAMP) $(NODE_DIR)/tsconfig.json $(shell find $(NODE_DIR)/src $(NODE_DIR)/example -name '*.ts')
	@if [ -f $(NODE_STAMP) ]; then \
	    cd $(NODE_DIR) && node_modules/.bin/tsc -p . && touch dist/.built; fi

## regenerate the committed Node stubs (ts-proto via buf; a test checks them for drift)
node-stubs: $(NODE_STAMP) $(BUF)
	rm -rf $(NODE_DIR)/src/gen
	$(BUF) generate --template $(NODE_DIR)/buf.gen.yaml

## Go and Java stubs, where the plugins are installed (not committed; see README)
go-stubs: $(BUF)
	$(BUF) generate --template client_stubs/go/buf.gen.yaml

java-stubs: $(BUF)
	$(BUF) generate --template client_stubs/java/buf.gen.yaml

## run the gateway on 127.0.0.1:50051 with the embedded TWS simulator behind it
run: install
	$(VENV)/bin/ibgw serve

## run the TWS simulator alone on 127.0.0.1:7497 (a paper TWS for any ib_insync script)
sim: install
	$(PY) -m tws_simulator --host 127.0.0.1 --port 7497

## the whole test suite (unit + end-to-end against the simulator)
test: install compat client node $(BUF)
	$(PY) -m pytest

## a long random run of the hypothesis fuzz test (make test runs a short deterministic one)
FUZZ_EXAMPLES ?= 5000
fuzz: install
	IBGW_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:randomly tests/e2e/hardening/test_fuzz.py

## regenerate the committed stubs: Python (messages, gRPC stubs, .pyi type stubs, the
## descriptor set with comments) and Node (make node-stubs)
proto: install
	rm -f $(STUBS_DIR)/ibgateway/v1/*_pb2*.py $(STUBS_DIR)/ibgateway/v1/*_pb2*.pyi
	$(PY) -m grpc_tools.protoc -I protos \
	    --python_out=$(STUBS_DIR) --grpc_python_out=$(STUBS_DIR) \
	    --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=$(STUBS_DIR) \
	    --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(STUBS_DIR) \
	    $(PROTOS)
	# the same files with their comments (source info): what server reflection serves
	$(PY) -m grpc_tools.protoc -I protos --include_source_info \
	    --descriptor_set_out=$(STUBS_DIR)/ibgateway/v1/ibgateway.binpb $(sort $(PROTOS))
	# and the Node stubs (ts-proto)
	$(MAKE) node-stubs

## buf (from the npm registry) for `buf lint` on the protos
$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

buf: $(BUF)

lint: install $(BUF)
	$(BUF) lint
	$(VENV)/bin/ruff check server tests bench examples $(CLIENT_DIR)
	$(VENV)/bin/ruff format --check server tests bench examples $(CLIENT_DIR)
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/lint-imports  # the layering of DESIGN.md, as contracts in pyproject.toml

## quote fan-out benchmark vs a bare grpc.aio server (a few minutes); BENCH_ARGS=--quick is seconds
bench: install
	$(PY) -m bench.quotes_fanout $(BENCH_ARGS)

## scale-out benchmark: an edge of a cluster vs the all-in-one gateway, owner cost,
## failover (a few minutes; not in CI); BENCH_ARGS=--quick is under a minute
bench-scale: install
	$(PY) -m bench.scale $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(CLIENT_VENV) .pytest_cache .mypy_cache .ruff_cache
