# G2 — set-up, demo, tests and benchmarks. `make run` and `make test` work on a
# fresh machine: `deps` installs what the build needs.

CARGO ?= cargo
APT_PACKAGES := libclang-dev sccache

# sccache caches compiled crates and, through cc-rs, RocksDB's C++ across
# clones on one machine (~/.cache/sccache): a fresh clone on a machine that
# built before compiles little. Looked up when each command runs, so the very
# first `make test` (which installs it) uses it too; without it, or if its
# server does not start, cargo runs rustc directly (an empty RUSTC_WRAPPER is no
# wrapper). A RUSTC_WRAPPER set by the caller wins.
WRAP = RUSTC_WRAPPER=$${RUSTC_WRAPPER-$$(sccache --show-stats >/dev/null 2>&1 && command -v sccache)}

.PHONY: deps run test fmt clippy bench help

help:
	@echo "make run    - the TSP island GA on an in-process network of 8 nodes (berlin52)"
	@echo "make test   - fmt check, clippy, and every test of the workspace"
	@echo "make bench  - benchmarks (call round trip, framework overhead)"

# libclang-dev is needed by rocksdb's bindgen (g2-store-rocksdb); sccache, for
# the cache above, only speeds builds up: a failure to install it is reported,
# not fatal.
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq || true; \
	  for p in $$missing; do \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p || \
	    case $$p in sccache) echo "sccache could not be installed: builds are not cached";; *) exit 1;; esac; \
	  done; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup)"; exit 1; }
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true

# The demo runs under --ft none, so it is built without RocksDB (C++ compiled
# from source: many minutes on a fresh machine).
run: deps
	$(WRAP) $(CARGO) run --release -p tsp-islands --no-default-features

fmt:
	$(CARGO) fmt --all --check

clippy:
	$(WRAP) $(CARGO) clippy --workspace --all-targets -- -D warnings

# cargo-nextest (on this kind of machine) runs the test binaries side by side,
# where `cargo test` runs them one after another and waits for each one's
# slowest test; doctests, which nextest does not run, follow with cargo test.
test: deps fmt clippy
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  echo "$(CARGO) nextest run --workspace && $(CARGO) test --workspace --doc"; \
	  $(WRAP) $(CARGO) nextest run --workspace --no-fail-fast && \
	  $(WRAP) $(CARGO) test --workspace --doc; \
	else \
	  echo "$(CARGO) test --workspace (cargo-nextest not found)"; \
	  $(WRAP) $(CARGO) test --workspace; \
	fi

bench: deps
	$(CARGO) bench -p g2 --bench call_round_trip
	$(CARGO) run --release -p tsp-islands -- --overhead --nodes 1 --instance ch150 --repeat 7 --json
	$(CARGO) run --release -p g2-volunteer --no-default-features --example netbench -- --placement both --json
	$(CARGO) run --release -p g2-volunteer --example ft_bench -- --calls 2000 --objects 100 --json
	$(CARGO) run --release -p tsp-islands -- --ft-overhead --instance ch150 --nodes 4 --islands 8 --epochs 50 --generations 20 --checkpoint-every 10 --repeat 5 --json
	$(CARGO) run --release -p tsp-islands -- --ft-overhead --instance ch150 --nodes 4 --islands 8 --epochs 50 --generations 20 --checkpoint-every 100 --repeat 5 --json
