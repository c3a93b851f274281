# `make test` is the README's second set-up command and what .ci/run calls: it installs
# every test dependency (Python packages, the example plugin, Debian tools the tests
# drive) and runs the whole suite. install.py picks the environment: this python3's own
# (a virtual environment, pyenv), or the repository's .venv when the distribution's
# python3 refuses pip (PEP 668).
PY ?= python3
# command:package pairs
DEBIAN_TOOLS := tmux:tmux systemd-analyze:systemd ip:iproute2 setpriv:util-linux mount:mount \
	redis-server:redis-server fusermount3:fuse3

.PHONY: test test-fast deps debian-tools lint run
test: deps
	"$$($(PY) install.py --test-python)" -m pytest

# the fast layer: no real labd, no worker processes (tests marked daemon are left out)
test-fast: deps
	"$$($(PY) install.py --test-python)" -m pytest -m "not daemon and not slow"

deps: debian-tools
	$(PY) install.py --test

debian-tools:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "install the Debian packages:$$missing (sudo apt-get install$$missing)"; exit 1; fi; \
	fi

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

run:
	$(PY) install.py
