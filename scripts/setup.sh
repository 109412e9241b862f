#!/usr/bin/env bash
# Install what building and testing drover need, idempotently.
#
#   scripts/setup.sh
#
# Quiet when everything is already there (a second run only asks dpkg, so it
# takes well under a second); says what it installs; fails loudly.
# Extra Debian packages can be added with SETUP_EXTRA_PACKAGES="pkg1 pkg2".
set -euo pipefail

# cargo lives in ~/.cargo/bin (rustup); non-login shells often lack it.
export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages, and why:
PACKAGES=(
  build-essential gcc pkg-config # linking Rust crates with C parts
  libseccomp-dev                 # libcontainer's "libseccomp" feature
  ca-certificates                # TLS for crates.io and registries
  busybox-static                 # rootfs of examples/hello and test images
  runc                           # the external runtime driver and its tests
  tini                           # --init on the runc driver: its static tini (/usr/bin/tini-static)
  skopeo umoci buildah           # interoperability tests and benchmark peers
  hyperfine pigz zstd time       # bench/build.sh (time = GNU /usr/bin/time)
  wrk                            # serve tests (load under deploys), bench/proxy.sh
  nginx                          # bench/proxy.sh's fast backend and peer proxy (here, so no benchmark needs the network)
  aide b3sum                     # bench/drift.sh peers
  curl                           # serve tests (HTTP/2 through the proxy)
  prometheus                     # metrics tests: a loopback Prometheus scrapes serve's /metrics
  chromium chromium-driver       # dashboard tests: headless Chromium driven over WebDriver
  docker-registry apache2-utils  # registry tests: a loopback registry (distribution 2.8), htpasswd for its auth
  python3-venv openssl           # trust-chain tests: outside verifiers (in-toto, spdx-tools) in .test-venv; openssl reads our keys
  liblzma-dev                    # xz2: .deb members and Packages.xz (links the system liblzma)
  gpgv debian-archive-keyring    # packages layers: InRelease signatures, Debian's signing keys
  mmdebstrap                     # bench/packages.sh's peer: the same package set as a tarball
  postgresql                     # state tests on PostgreSQL: each test binary runs its own throwaway cluster
  iproute2                       # fleet tests: hosts as network namespaces (ip netns, veth pairs, a bridge)
)
# shellcheck disable=SC2206  # word splitting of the extra list is intended
PACKAGES+=(${SETUP_EXTRA_PACKAGES:-})

die() { echo "setup.sh: $*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    # "ii" = wanted and installed; anything else (absent, config-files only,
    # half-installed) means apt has work to do.
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$p")
  done

  if ((${#missing[@]})); then
    echo "setup.sh: installing ${missing[*]}"
    SUDO=()
    if ((EUID != 0)); then
      command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
      SUDO=(sudo -n)
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    # apt output goes to a log that is shown only on failure.
    if ! "${SUDO[@]}" apt-get update -q >"$log" 2>&1; then
      cat "$log" >&2
      die "apt-get update failed"
    fi
    if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
      cat "$log" >&2
      die "apt-get install failed for: ${missing[*]}"
    fi
    echo "setup.sh: installed ${#missing[@]} package(s)"
  fi
  # The docker-registry package enables a system-wide registry on :5000. The
  # tests start their own on free loopback ports, so it is not needed; stop
  # it so it holds no port and no storage (only where systemd runs).
  # Likewise nginx's system service on :80 (bench/proxy.sh starts its own)
  # and prometheus' on :9090 (the metrics tests start their own), and
  # postgresql's cluster on :5432 (the state tests initdb their own).
  for service in docker-registry nginx prometheus postgresql; do
    if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet "$service" 2>/dev/null; then
      echo "setup.sh: disabling the $service system service (tests and benchmarks start their own)"
      SUDO=()
      ((EUID == 0)) || SUDO=(sudo -n)
      "${SUDO[@]}" systemctl disable --now "$service" >/dev/null 2>&1 \
        || echo "setup.sh: warning: could not disable $service.service" >&2
    fi
  done
else
  echo "setup.sh: warning: not a Debian system (no dpkg-query); install these yourself: ${PACKAGES[*]}" >&2
fi

# --- Python verifiers for the trust-chain tests ----------------------------
# Outside tools check what drover signs and writes: in-toto/securesystemslib
# (DSSE, in-toto statements), spdx-tools (SPDX 2.3). Pinned, in a venv at
# .test-venv (tests find it there); rebuilt when this list changes.
PY_REQUIREMENTS="in-toto==3.1.0 securesystemslib[crypto]==1.6.0 spdx-tools==0.8.5 cryptography==50.0.2"
venv="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.test-venv"
if [[ "$(cat "$venv/.requirements" 2>/dev/null)" != "$PY_REQUIREMENTS" ]]; then
  echo "setup.sh: installing Python verifiers into $venv ($PY_REQUIREMENTS)"
  rm -rf "$venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (is python3-venv installed?)"
  # shellcheck disable=SC2086  # the list is words on purpose
  "$venv/bin/pip" install -q --disable-pip-version-check $PY_REQUIREMENTS \
    || die "pip install failed for: $PY_REQUIREMENTS"
  echo "$PY_REQUIREMENTS" >"$venv/.requirements"
fi

# --- Rust toolchain ---------------------------------------------------------
# rustup cannot download toolchains on these machines, so a missing cargo is
# an error to report, not something to fix here. Run them rather than just
# look them up: a rustup proxy without a default toolchain exists but fails.
if ! cargo --version >/dev/null 2>&1 || ! rustc --version >/dev/null 2>&1; then
  die "no Rust toolchain: cargo/rustc not found in PATH or ~/.cargo/bin.
Install Rust (rustup, https://rustup.rs) with components rustfmt and clippy, then rerun."
fi

# --- Shell completion and man pages ----------------------------------------
# Generated by the binary from its own command line (drover completion, drover
# man), so they always match it; written only when they changed. Skip with
# SETUP_NO_DOCS=1 (no build, nothing installed).
if [[ -z ${SETUP_NO_DOCS:-} ]]; then
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  (cd "$repo" && cargo build -q -p drover) || die "cargo build -p drover failed"
  # Where cargo put it: CARGO_TARGET_DIR, when set, moves the target dir.
  target=${CARGO_TARGET_DIR:-$repo/target}
  [[ $target == /* ]] || target="$repo/$target"
  drover="$target/debug/drover"
  SUDO=()
  ((EUID == 0)) || SUDO=(sudo -n)
  # install_if_changed FILE DEST: copy when DEST differs; says so.
  install_if_changed() {
    if ! cmp -s "$1" "$2"; then
      "${SUDO[@]}" install -D -m 0644 "$1" "$2" || die "cannot write $2"
      echo "setup.sh: installed $2"
    fi
  }
  docs=$(mktemp -d)
  trap 'rm -rf "$docs" "${log:-}"' EXIT
  "$drover" completion bash >"$docs/drover.bash"
  "$drover" completion zsh >"$docs/_drover"
  "$drover" completion fish >"$docs/drover.fish"
  install_if_changed "$docs/drover.bash" /usr/local/share/bash-completion/completions/drover
  install_if_changed "$docs/_drover" /usr/local/share/zsh/site-functions/_drover
  install_if_changed "$docs/drover.fish" /usr/local/share/fish/vendor_completions.d/drover.fish
  "$drover" man --dir "$docs/man1" 2>/dev/null
  for page in "$docs"/man1/*.1; do
    install_if_changed "$page" "/usr/local/share/man/man1/$(basename "$page")"
  done
fi
