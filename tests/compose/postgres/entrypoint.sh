#!/bin/bash
# First start: initdb as the postgres user with POSTGRES_PASSWORD for
# POSTGRES_USER (default postgres), password (scram) login from any address,
# then POSTGRES_DB (default: the user's name). Every start: the server in the
# foreground as the postgres user, listening on all interfaces.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 0775 /var/run/postgresql

as_postgres() { runuser -u postgres -- "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    # The password goes through a file: any character is safe.
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # As the official image does: a server on its socket only (so a TCP health
    # check fails until this is done), POSTGRES_DB, then every *.sql (psql,
    # stop on the first error) and *.sh of /docker-entrypoint-initdb.d in name
    # order, then the real server.
    as_postgres pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "$db" != postgres ]; then
        as_postgres createdb --username="$user" --owner="$user" -- "$db"
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sql) echo "postgres-entrypoint: running $f"
                   as_postgres psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
                       --username="$user" --dbname="$db" -f "$f" ;;
            *.sh)  echo "postgres-entrypoint: running $f"
                   bash "$f" ;;
            *)     echo "postgres-entrypoint: ignoring $f" ;;
        esac
    done
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi

# setpriv execs (runuser would stay as parent and not pass SIGINT on).
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c listen_addresses='*' "$@"
