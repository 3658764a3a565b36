#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real peers:
#   softhsm2 (an HSM for the pkcs11 key provider), dcmtk (storescu, echoscu,
#   dcmdump), orthanc (the reference archive in tests and benchmarks) and
#   chromium (headless browser tests, driven by Playwright with this binary)
#   nginx (the reverse proxy of infra/deploy, run in front of a vault) and
#   systemd (only its systemd-analyze, which verifies infra/deploy's units).
# Does nothing for packages already installed; needs root (or sudo) otherwise.
set -euo pipefail

packages=(softhsm2 dcmtk orthanc chromium nginx systemd)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

run_as_root=()
[ "$(id -u)" -eq 0 ] || run_as_root=(sudo)
echo "installing Debian packages: ${missing[*]}"
"${run_as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${run_as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
