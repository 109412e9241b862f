#!/usr/bin/env bash
# Run the whole test suite: scripts/test.sh [extra cargo test args...]
#
#   scripts/test.sh                         # everything
#   scripts/test.sh -p drover-core          # one crate
#   scripts/test.sh --test tests            # the integration tests (one binary)
#   scripts/test.sh --test tests interop::  # one topic of them: tests/interop.rs
#   scripts/test.sh -- --nocapture          # args after -- go to the test binaries
#
# Exit code is cargo's.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tests use busybox, skopeo, umoci, ... from Debian; setup is a no-op when
# they are already installed.
bash scripts/setup.sh

# All packages and all targets, unless the caller picked some: cargo would
# otherwise let --workspace / --all-targets win silently over -p / --test.
packages=(--workspace)
targets=(--all-targets)
for arg in "$@"; do
  [[ $arg == -- ]] && break
  case $arg in
    -p | -p?* | --package | --package=*) packages=() ;;
    --lib | --bin* | --test* | --bench* | --example* | --doc) targets=() ;;
  esac
done

# exec: cargo's exit code becomes ours, and signals reach cargo directly.
exec cargo test "${packages[@]}" "${targets[@]}" "$@"
