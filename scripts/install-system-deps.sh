#!/usr/bin/env bash
# Debian packages some engines need at run time, and chromium for the HTML report's browser test. Installs only
# what is missing; needs root (CI and the developers' machines are root). Python packages come from
# pyproject.toml, not from here.
set -euo pipefail
needed=()
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || needed+=("$pkg")
done
if [ ${#needed[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}"
fi
