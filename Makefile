# Every target does its own set-up: a virtualenv in .venv, the package, and the
# external components (toxiproxy-server, rabbitmq-server) when they are missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -n 2

.PHONY: setup browser docker k8s demo catalog test test-docker test-k8s flagship-k8s soak check lint unit bench gc clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)
	$(BIN)/testbed setup

demo: setup
	$(BIN)/testbed run

catalog: setup
	$(BIN)/testbed run --all

# Headless Chromium renders a generated report in the tests (Debian's package, as root).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The docker runtime's engine (docker.io, dockerd) and its images, built offline and
# cached, before the tests start: a 3-minute build must not run beside the experiments.
docker: setup
	$(BIN)/testbed setup --docker

# The k8s runtime's cluster: Kubernetes and etcd built from the Go module proxy (about
# 10 minutes on 2 cores the first time, cached after), then started on loopback, with
# the offline images loaded into its containerd.
k8s: setup docker
	$(BIN)/testbed setup --k8s

# The k8s tier (not in CI yet, see .ci/run): the integration tests through the k8s
# runtime, then the cluster's own tests (a stop and a start that leave nothing behind). The cluster is stopped at the end, pass
# or fail, and nothing may be left for gc.
test-k8s: setup docker k8s
	@rc=0; \
	$(BIN)/pytest $(PYTEST_ARGS) --runtime k8s -m "not docker and not k8s_cluster" \
		tests/integration || rc=1; \
	$(BIN)/pytest -p no:cacheprovider -m k8s_cluster tests/integration || rc=1; \
	$(BIN)/testbed k8s stop || rc=1; \
	$(BIN)/testbed gc --check || { $(BIN)/testbed gc; rc=1; }; \
	exit $$rc

# The flagship on k8s, with reports of its own (not in CI: 11 of 16 here, calibrated on k8s;
# every hop costs ten times what it does locally; see the README).
flagship-k8s: setup docker k8s
	$(BIN)/testbed run --runtime k8s --report-dir reports/k8s; rc=$$?; \
	$(BIN)/testbed k8s stop; exit $$rc

# The experiments run in a session of their own: the docker and integration tests
# beside them would be load the experiments' tolerances were never sized for. Then the
# same again on the docker runtime.
test: setup browser docker lint
	$(BIN)/pytest $(PYTEST_ARGS) -m "not heavy" tests
	@# A Kafka JVM and a Jaeger beside the timing tests would be load they were not sized for.
	$(BIN)/pytest $(PYTEST_ARGS) -m heavy tests
	@# One experiment at a time: a Kafka JVM or a second experiment beside one made
	@# verdicts flip (E8 on RabbitMQ, the Kafka rows' restart and reconnect times).
	$(BIN)/pytest -p no:cacheprovider experiments scenarios
	$(MAKE) --no-print-directory test-docker
	@# Anything left for gc to collect is a leak, and fails the run (listed by --check,
	@# which removes nothing; then removed, so the next run starts clean).
	$(BIN)/testbed gc --check || { $(BIN)/testbed gc; exit 1; }

# The integration tests through the docker runtime (the ones about the local runtime
# skip; the docker runtime's own tests ran above), then the flagship experiments in
# containers, with reports of their own.
test-docker: setup docker
	$(BIN)/pytest $(PYTEST_ARGS) --runtime docker -m "not docker" tests/integration
	$(BIN)/testbed run --runtime docker --report-dir reports/docker

# Hardening, not part of `make test` (about an hour): the integration tests with four
# workers on this 2-core machine, ten times over, looking for port and name collisions;
# then nothing may be left for `testbed gc` to collect. The tests that assert wall-clock
# timings (marker `timing`, sized for two workers) are left out: at -n 4 they measure the
# oversubscription.
SOAK_ROUNDS ?= 10
soak: setup docker
	@for round in $$(seq $(SOAK_ROUNDS)); do \
		echo "soak round $$round of $(SOAK_ROUNDS)"; \
		$(BIN)/pytest -n 4 -q -p no:cacheprovider -m "not timing" tests/integration || exit 1; \
	done
	$(BIN)/testbed gc --check || { $(BIN)/testbed gc; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check testbed tests benchmarks experiments
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

check: lint unit

# Every benchmark, one table with same-run baselines and ratios, into benchmarks/RESULTS.md
# (about 12 minutes; needs the docker images, which `make docker` builds).
bench: setup docker
	$(BIN)/python benchmarks/run_all.py

gc: $(STAMP)
	$(BIN)/testbed gc

clean:
	rm -rf $(VENV) build *.egg-info
