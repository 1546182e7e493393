#!/bin/sh
# Installs what bc_gitops needs to build and test, when it is missing:
# Erlang/OTP (>= 25), rebar3, Elixir, the C build tools and OpenSSL headers
# for the Rust NIF, the servers the tests start on loopback, procps
# (`kill`, for the host-project tests to clean up what they started),
# iproute2 (`ip`: the cluster tests give each node a network namespace),
# chromium (the status page is tested in a headless browser),
# prometheus (its `promtool check metrics` checks /metrics), and
# gnupg, openssh-client and age, with which the trust tests make signed
# commits and encrypted values (bc_gitops itself never runs them).
#
# Used by `make test`, `make demo` and .ci/run. Costs a few dpkg lookups when
# everything is there. As root it installs through apt-get; as anyone else it
# prints the command to run and stops.
set -eu

PACKAGES="build-essential pkg-config libssl-dev git erlang-nox erlang-dev rebar3 iproute2 \
erlang-common-test erlang-eunit erlang-dialyzer erlang-proper elixir lighttpd lighttpd-mod-openssl \
openssl openssh-server procps chromium prometheus gnupg openssh-client age"

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust >= 1.91 first (https://rustup.rs)" >&2
    exit 1
fi

# rustup's minimal profile has no rustfmt or clippy; make test needs both.
if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$component" ||
            rustup component add "$component"
    done
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
    for tool in erl rebar3 elixir git cc; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "setup: $tool not found; install Erlang/OTP >= 25, rebar3, Elixir, git and a C compiler" >&2
            exit 1
        }
    done
    exit 0
fi

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $pkg" ;;
    esac
done

[ -z "$missing" ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages:$missing" >&2
    echo "setup: run this as root, then try again:" >&2
    echo "  sudo sh -c '$cmd'" >&2
    exit 1
fi
echo "setup: installing$missing"
sh -c "$cmd"
