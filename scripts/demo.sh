#!/usr/bin/env bash
# A throwaway tour: a local repository in a temp directory; a PostgreSQL cluster of its own, backed
# up twice (the second after some writes, storing little), restored into a new database and
# verified, and a changed row caught by verify; then files and a stream, a verified restore and a
# full check. Everything is removed at the end. PG_BIN=<dir> picks the PostgreSQL programs;
# without PostgreSQL the rest still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
strongbox() { node dist/bin/strongbox.js "$@"; }

work=$(mktemp -d -t strongbox-demo-XXXXXX)
pgdir=''
pgctl=''
cleanup() {
  if [[ -n $pgctl ]]; then (cd "$pgdir" && as_server "$pgctl" stop -D "$pgdir/data" -m immediate >/dev/null 2>&1) || true; fi
  rm -rf "$work" ${pgdir:+"$pgdir"}
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
export STRONGBOX_REPO="$work/repo" STRONGBOX_PASSWORD_FILE="$work/password"
head -c 24 /dev/urandom | base64 > "$STRONGBOX_PASSWORD_FILE"
chmod 600 "$STRONGBOX_PASSWORD_FILE"

echo "== strongbox init"
strongbox init

# PostgreSQL refuses to run as root: the server then runs as the postgres user.
as_server() {
  if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The server's programs: PG_BIN, else the newest /usr/lib/postgresql/<version>/bin (Debian,
# Ubuntu) that has them (a client-only version has no initdb), else PATH's; strongbox finds
# pg_dump the same way.
find_pg_bin() {
  local dir candidates
  if [[ -n ${PG_BIN:-} ]]; then
    candidates=$PG_BIN
  else
    candidates=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -Vr)
    if command -v initdb >/dev/null; then candidates+=$'\n'$(dirname "$(command -v initdb)"); fi
  fi
  while read -r dir; do
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/psql ]]; then
      echo "$dir"
      return
    fi
  done <<< "$candidates"
}

postgres_demo() {
  local bin port version
  bin=$(find_pg_bin)
  if [[ -z $bin ]]; then
    echo "== PostgreSQL part skipped: initdb, pg_ctl and psql were not found${PG_BIN:+ in $PG_BIN}; install them (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set PG_BIN to their directory"
    return
  fi
  if [[ $(id -u) == 0 ]] && ! id postgres >/dev/null 2>&1; then
    echo "== PostgreSQL part skipped: as root the server must run as the postgres user, and there is none"
    return
  fi
  # Its own directory (the server's user must own it), its socket there, no TCP: nothing outside
  # this demo can reach it, and it cannot collide with a server already running.
  pgdir=$(mktemp -d -t strongbox-demo-pg-XXXXXX)
  if [[ $(id -u) == 0 ]]; then chown postgres: "$pgdir"; fi
  port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
  version=$("$bin/initdb" --version | sed -E "s/.*\(PostgreSQL\) ([^ ]+).*/\1/")
  echo "== a throwaway PostgreSQL $version cluster in $pgdir (port $port, socket only)"
  (cd "$pgdir" && as_server "$bin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null)
  printf "fsync = off\nlisten_addresses = ''\nunix_socket_directories = '%s'\nport = %s\n" "$pgdir" "$port" >> "$pgdir/data/postgresql.conf"
  pgctl=$bin/pg_ctl
  (cd "$pgdir" && as_server "$pgctl" start -w -D "$pgdir/data" -l "$pgdir/server.log" >/dev/null)
  # Only this cluster's settings: a PGSSLMODE or PGSERVICE of this machine must not apply to it.
  unset $(compgen -e | grep '^PG' || true)
  export PGHOST=$pgdir PGPORT=$port PGUSER=postgres PGDATABASE=shop
  sql() { "$bin/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }

  echo "== a shop database: 100000 orders, 2000 customers"
  sql -d postgres -c 'create database shop'
  sql -c "create table customers (id int primary key, name text not null);
    insert into customers select g, 'customer ' || g from generate_series(1, 2000) g;
    create table orders (id bigserial primary key, customer int not null references customers,
      placed timestamptz not null, status text not null, total numeric(10, 2) not null);
    insert into orders (customer, placed, status, total)
      select 1 + g % 2000, timestamptz '2026-01-01' + g * interval '1 minute', 'placed', (g % 997) * 1.25
      from generate_series(1, 100000) g;"
  echo "== strongbox backup postgres"
  strongbox backup postgres --tag env=demo
  echo "== a day of writes (1000 orders shipped, 500 new), backed up again: only the changes are stored"
  sql -c "update orders set status = 'shipped' where id between 90001 and 91000;
    insert into orders (customer, placed, status, total)
      select 1 + g % 2000, timestamptz '2026-03-11' + g * interval '1 minute', 'placed', 19.90
      from generate_series(1, 500) g;"
  strongbox backup postgres --tag env=demo
  echo "== restore the latest into a new database, shop_restored: every table checked against the backup"
  PGDATABASE=shop_restored strongbox restore latest --name shop
  echo "== change one row in shop_restored, and verify it against the backup"
  sql -d shop_restored -c "update orders set total = total + 1 where id = 4242"
  local code=0
  PGDATABASE=shop_restored strongbox verify latest --name shop || code=$?
  if [[ $code != 7 ]]; then
    echo "verify should have exited 7 (a difference), not $code" >&2
    exit 1
  fi
  echo "verify caught the changed row: exit 7"
}
postgres_demo

echo "== demo files in $work/data"
mkdir -p "$work/data/app/conf" "$work/data/app/empty"
cp -r docs "$work/data/app/"
printf 'listen = 8080\n' > "$work/data/app/conf/app.conf"
ln -s conf/app.conf "$work/data/app/current.conf"
head -c 20000000 /dev/urandom > "$work/data/app/blob.bin"

echo "== strongbox backup files (first)"
strongbox backup files "$work/data/app" --tag env=demo
echo "== change one file, back up again: only the change is stored"
printf 'listen = 9090\n' > "$work/data/app/conf/app.conf"
strongbox backup files "$work/data/app" --tag env=demo
echo "== a stream, as any command's output would be"
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
