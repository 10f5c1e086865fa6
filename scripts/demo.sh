#!/usr/bin/env bash
# A throwaway tour: a local repository in a temp directory, a backup of some files and of a
# stream, a second backup that stores almost nothing, a verified restore, and a full check.
set -euo pipefail
cd "$(dirname "$0")/.."
strongbox() { node dist/cli/main.js "$@"; }

work=$(mktemp -d -t strongbox-demo-XXXXXX)
trap 'rm -rf "$work"' EXIT
export STRONGBOX_REPO="$work/repo" STRONGBOX_PASSWORD_FILE="$work/password"
head -c 24 /dev/urandom | base64 > "$STRONGBOX_PASSWORD_FILE"
chmod 600 "$STRONGBOX_PASSWORD_FILE"

echo "== demo data in $work/data"
mkdir -p "$work/data/app/conf" "$work/data/app/empty"
cp -r docs "$work/data/app/"
printf 'listen = 8080\n' > "$work/data/app/conf/app.conf"
ln -s conf/app.conf "$work/data/app/current.conf"
head -c 20000000 /dev/urandom > "$work/data/app/blob.bin"

echo "== strongbox init"
strongbox init
echo "== strongbox backup files (first)"
strongbox backup files "$work/data/app" --tag env=demo
echo "== change one file, back up again: only the change is stored"
printf 'listen = 9090\n' > "$work/data/app/conf/app.conf"
strongbox backup files "$work/data/app" --tag env=demo
echo "== a stream, as pg_dump output would be"
head -c 5000000 /dev/urandom > "$work/stream.bin"
stream_snapshot=$(strongbox backup stdin --name stream.bin --json < "$work/stream.bin" | node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>console.log(JSON.parse(s).snapshot))')
echo "stored as snapshot ${stream_snapshot:0:8}"
echo "== strongbox snapshots"
strongbox snapshots
echo "== restore the latest files snapshot and compare"
strongbox restore files latest --kind files --target "$work/restored"
diff -r "$work/data/app" "$work/restored$work/data/app" && echo "restored tree is identical"
strongbox cat "$stream_snapshot" > "$work/stream.out"
cmp "$work/stream.bin" "$work/stream.out" && echo "restored stream is identical"
echo "== strongbox check --read-data"
strongbox check --read-data
