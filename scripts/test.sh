#!/usr/bin/env bash
# Run the whole test suite: scripts/test.sh [extra cargo test args...]
#
#   scripts/test.sh                      # everything
#   scripts/test.sh -p drover-core       # one crate
#   scripts/test.sh -- --nocapture       # args after -- go to the test binaries
#
# Exit code is cargo's.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Tests use busybox, skopeo, umoci, ... from Debian; setup is a no-op when
# they are already installed.
bash scripts/setup.sh

# exec: cargo's exit code becomes ours, and signals reach cargo directly.
exec cargo test --workspace --all-targets "$@"
