#!/usr/bin/env bash
# Fuzzes a spec parser for a while: ./fuzz/run.sh [SECONDS] [TARGET]
# TARGET is term_parse (the default) or yaml_parse.
#
# Installs cargo-fuzz when it is missing. cargo-fuzz needs nightly Rust;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain use the nightly flags it
# passes (-Z sanitizer=address and friends). Crashes land in
# fuzz/artifacts/TARGET/; the corpus grows in fuzz/corpus/TARGET/.
set -euo pipefail

seconds="${1:-60}"
target="${2:-term_parse}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

corpus="$here/corpus/$target"
mkdir -p "$corpus"
# Seed the corpus with a few real inputs so the fuzzer starts from syntax.
dict=()
case "$target" in
term_parse)
    [ -e "$corpus/seed-config" ] || cat >"$corpus/seed-config" <<'TERMS'
%% A typical spec file.
#{name => my_app, version => "1.0.0", port => 8080,
  env => [{key, <<"value">>}, {list, [1, 2.5e-3, $a, 'Quoted atom']}],
  bin => <<1:4, 16#F:4, "é"/utf8, 1.5:32/float-little>>,
  deep => {[a | b], #{-1 => 16#ff_ff, "k" => {}}}}.
TERMS
    ;;
yaml_parse)
    dict=(-dict="$here/yaml.dict")
    [ -e "$corpus/seed-spec" ] || cat >"$corpus/seed-spec" <<'YAML'
# A typical spec file.
name: my_app
version: "1.0.0"
source: {type: git, url: 'https://h.test/a.git', ref: v1}
env:
  port: 8080
  ratio: -2.5e-3
  list: [1, 0x1F, 0o17, ~, true, "tab\t", 'it''s']
  text: |
    two
    lines
  folded: >-
    one
    line
depends_on:
  - base
YAML
    [ -e "$corpus/seed-refused" ] || cat >"$corpus/seed-refused" <<'YAML'
%TAG !e! tag:example.test,2000:
--- !!map
? [complex, key]
: &anchor !!str value
alias: *anchor
tagged: !e!thing {a: !!int "1", b: !!float 2, c: !!null "", d: .inf}
...
--- second
YAML
    ;;
esac
cd "$here/.."
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir "$here" "$target" "$corpus" -- \
    ${dict[@]+"${dict[@]}"} -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048
