# The quick start: `make demo` and `make test` each install the pinned npm toolchain (anvil, solc, the
# protocol packages) on first use, build, and run.

NODE_STAMP := anvil/node_modules/.cascade-installed
CARGO ?= cargo

.PHONY: toolchain demo devnet test bench faults lint clean-toolchain

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

# The fault campaign, for people (CI runs a short version in the tests): the keeper through the fault
# proxy at 20% and 50% faults beside a clean run, an endpoint gone for 20 s, 30 kills at random
# moments; each test prints its figures. About ten minutes on two cores.
faults: toolchain
	CASCADE_FAULT_CAMPAIGN=full $(CARGO) nextest run --test faults --no-capture --test-threads 1

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean-toolchain:
	rm -rf anvil/node_modules
