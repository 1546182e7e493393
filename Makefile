# bc_gitops: the two commands a newcomer needs are `make demo` and `make test`.
# Both install missing system packages first (scripts/setup.sh).

REBAR ?= rebar3
export REBAR_OFFLINE = 1

.PHONY: all setup compile demo test rust-test rust-lint erlang-test bench bench-smoke fuzz docs clean

all: compile

setup:
	@sh scripts/setup.sh

## compile: the NIF, the application, and the command bin/bc_gitops.
compile: setup
	$(REBAR) compile
	install -D -m 0755 priv/bc_gitops bin/bc_gitops

## test: everything CI runs. Fails when any step fails.
test: setup rust-test rust-lint erlang-test demo bench-smoke

rust-test:
	cargo test --locked --workspace

rust-lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

erlang-test: compile
	$(REBAR) eunit
	$(REBAR) ct || { sh scripts/ct_failures.sh; exit 1; }
	$(REBAR) xref
	$(REBAR) dialyzer
	$(REBAR) edoc

## fuzz: each parser's fuzz target in turn, SECONDS each (60 by default).
fuzz:
	bash fuzz/run.sh $(SECONDS) term_parse
	bash fuzz/run.sh $(SECONDS) yaml_parse

docs: compile
	$(REBAR) edoc

clean:
	$(REBAR) clean
	cargo clean
	rm -f priv/bc_gitops_nif.so bin/bc_gitops

## demo: the main job: a real local gitops repository, read and planned.
demo: compile
	escript scripts/demo.escript

## bench: the benchmarks (docs/benchmarks.md); bench-smoke: the same, tiny.
bench: compile
	escript bench/bench.escript

bench-smoke: compile
	escript bench/bench.escript smoke
