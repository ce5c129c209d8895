# The quick start: `make demo` and `make test` each install the pinned npm toolchain (anvil, solc, the
# protocol packages) on first use, build, and run.

NODE_STAMP := anvil/node_modules/.cascade-installed
CARGO ?= cargo

.PHONY: toolchain demo devnet test bench lint clean-toolchain

toolchain: $(NODE_STAMP)

# npm ci installs exactly the lockfile; re-run when either changes.
$(NODE_STAMP): anvil/package.json anvil/package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20+ (it brings npm), then re-run make"; exit 1; }
	npm ci --prefix anvil --ignore-scripts --no-audit --no-fund
	@touch $@

demo: toolchain
	$(CARGO) run --quiet -- demo

devnet: toolchain
	$(CARGO) run --quiet -- devnet

test: toolchain
	$(CARGO) nextest run --no-fail-fast

# The full benchmark, for people (CI runs a small instance in the tests): about five minutes at 10,000
# borrowers on two cores, most of it seeding. `make bench BENCH_ARGS="--borrowers 2000 --json f.json"`.
BENCH_ARGS ?= --borrowers 10000 --shocks 5 --blocks 10
bench: toolchain
	$(CARGO) run --quiet -- bench $(BENCH_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean-toolchain:
	rm -rf anvil/node_modules
