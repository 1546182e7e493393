#!/bin/sh
# Builds the Rust NIF in release mode and installs it as priv/bc_gitops_nif.so.
# rebar3 runs this before compiling (see rebar.config); it also works when
# bc_gitops is a dependency, from the dependency's own directory.
set -eu
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "bc_gitops: cargo not found; the NIF needs Rust >= 1.91 (https://rustup.rs)" >&2
    exit 1
fi

cargo build --release --locked -p bc_gitops_nif

target="${CARGO_TARGET_DIR:-target}/release"
case "$(uname -s)" in
    Darwin) lib="$target/libbc_gitops_nif.dylib" ;;
    *) lib="$target/libbc_gitops_nif.so" ;;
esac

mkdir -p priv
# Replace by rename, never in place: a running VM may have the old file mapped.
if ! cmp -s "$lib" priv/bc_gitops_nif.so 2>/dev/null; then
    cp "$lib" priv/bc_gitops_nif.so.tmp
    mv -f priv/bc_gitops_nif.so.tmp priv/bc_gitops_nif.so
fi
