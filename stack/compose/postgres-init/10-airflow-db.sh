#!/usr/bin/env bash
# Airflow's metadata database next to the pipeline's, owned by the same role (as in the native stack's
# pg_bootstrap). The postgres image runs this once, on the first start with an empty data volume.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set owner="$POSTGRES_USER" <<-'EOSQL'
	CREATE DATABASE airflow OWNER :"owner";
EOSQL
