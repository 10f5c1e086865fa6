#!/usr/bin/env bash
# Installs what `npm run bench` needs besides Node: PostgreSQL 15 to build the dataset and time
# pg_dump, GNU time for peak memory, and the baseline tools (restic, age, zstd, pgBackRest).
# Debian 12; as root.
set -euo pipefail

packages=(postgresql-15 time restic age zstd pgbackrest)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "bench/setup.sh: everything is installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
