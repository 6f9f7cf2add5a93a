# G2 — set-up, demo, tests and benchmarks. `make run` and `make test` work on a
# fresh machine: `deps` installs what the build needs.

CARGO ?= cargo
APT_PACKAGES := libclang-dev

.PHONY: deps run test fmt clippy bench help

help:
	@echo "make run    - the TSP island GA on an in-process network of 8 nodes (berlin52)"
	@echo "make test   - fmt check, clippy, and every test of the workspace"
	@echo "make bench  - benchmarks (call round trip, framework overhead)"

# libclang-dev is needed by rocksdb's bindgen (g2-store-rocksdb); install it when missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true

# The demo runs under --ft none, so it is built without RocksDB (C++ compiled
# from source: many minutes on a fresh machine).
run: deps
	$(CARGO) run --release -p tsp-islands --no-default-features

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps fmt clippy
	$(CARGO) test --workspace

bench: deps
	$(CARGO) bench -p g2 --bench call_round_trip
	$(CARGO) run --release -p tsp-islands -- --overhead --nodes 1 --instance ch150 --repeat 7 --json
	$(CARGO) run --release -p g2-volunteer --no-default-features --example netbench -- --placement both --json
	$(CARGO) run --release -p g2-volunteer --example ft_bench -- --calls 2000 --objects 100 --json
	$(CARGO) run --release -p tsp-islands -- --ft-overhead --instance ch150 --nodes 4 --islands 8 --epochs 50 --generations 20 --checkpoint-every 10 --repeat 5 --json
	$(CARGO) run --release -p tsp-islands -- --ft-overhead --instance ch150 --nodes 4 --islands 8 --epochs 50 --generations 20 --checkpoint-every 100 --repeat 5 --json
