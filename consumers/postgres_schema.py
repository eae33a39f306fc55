"""The PostgreSQL layout of each declared kind, and its evolution.

A kind's table is `<kind>s`: one typed column per declared field (the key is the primary key),
`crawled_at`, the record as `raw` JSONB, Kafka lineage and `landed_at`. The sink prepares every
declared kind's table on connect (`prepare_tables`), serialised by an advisory lock:

- a missing table is created;
- the declaration each table was last prepared with is recorded in `crawlstore_schema`
  (a table created by sql/ is recorded as it is on first sight);
- a field added to the declaration becomes a new column, filled from `raw` for the rows already
  there, and is recorded in `crawlstore_schema_changes`;
- anything that cannot be applied without loss or rewrite (a changed type or key, a field that
  became required, a new required field on a table with rows, a removed field) is refused with
  what to do instead; nothing is dropped or rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor as PgCursor

from consumers.errors import FatalError
from crawlstore.config import FieldSpec, KindSpec
from crawlstore.config.evolution import ADVICE, added_fields, declaration, unsafe_changes

LINEAGE = ("raw", "kafka_topic", "kafka_partition", "kafka_offset")
LOCK = "crawlstore.schema"
INT32 = 2**31 - 1
# Values PostgreSQL cannot take as COPY text in these types travel as JSON.
JSON_TYPES = frozenset({"list[text]", "json"})


def column_type(spec: FieldSpec) -> str:
    """The column type of a declared field."""
    t = spec.type
    if t == "decimal":
        digits = spec.digits or 38
        return f"numeric({digits}, {spec.places})" if spec.places is not None else "numeric"
    if t == "integer":
        small = spec.min is not None and spec.max is not None and spec.min >= -INT32 and spec.max <= INT32
        return "integer" if small else "bigint"
    return {
        "float": "double precision",
        "boolean": "boolean",
        "timestamp": "timestamptz",
        "date": "date",
        "list[text]": "jsonb",
        "json": "jsonb",
    }.get(t, "text")


@dataclass(frozen=True)
class TableSpec:
    """How one item kind maps onto its table: typed columns, then raw JSONB and Kafka lineage."""

    table: str
    key: str
    columns: tuple[str, ...]
    types: tuple[str, ...] = ()  # declared field type per column ("timestamp" for crawled_at)

    @classmethod
    def for_kind(cls, kind: KindSpec) -> TableSpec:
        columns = (*kind.fields, "crawled_at")
        types = (*(f.type for f in kind.fields.values()), "timestamp")
        return cls(f"{kind.kind}s", kind.key_field, columns, types)

    @property
    def all_columns(self) -> tuple[str, ...]:
        return (*self.columns, *LINEAGE)

    @property
    def json_columns(self) -> frozenset[int]:
        """Positions of the columns whose values are written as JSON text."""
        return frozenset(i for i, t in enumerate(self.types) if t in JSON_TYPES)

    def upsert(self) -> sql.Composed:
        """INSERT ... ON CONFLICT DO UPDATE, only when the incoming row is newer (stale-write guard)."""
        cols = self.all_columns
        return sql.SQL(
            "INSERT INTO {table} AS t ({cols}) VALUES %s "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}, landed_at = now() "
            "WHERE (EXCLUDED.crawled_at, EXCLUDED.kafka_offset) > (t.crawled_at, t.kafka_offset)"
        ).format(
            table=sql.Identifier(self.table),
            cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            key=sql.Identifier(self.key),
            updates=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in cols if c != self.key
            ),
        )

    @property
    def stage(self) -> str:
        return f"crawlstore_stage_{self.table}"

    def create_stage(self) -> sql.Composed:
        # A temp table lives as long as the session; ON COMMIT DELETE ROWS empties it per batch.
        return sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage=sql.Identifier(self.stage), table=sql.Identifier(self.table))

    def copy(self) -> sql.Composed:
        return sql.SQL("COPY {stage} ({cols}) FROM STDIN").format(
            stage=sql.Identifier(self.stage), cols=sql.SQL(", ").join(map(sql.Identifier, self.all_columns))
        )

    def merge(self) -> sql.Composed:
        """The staged rows into the table: the newest per key only, and only over an older row."""
        cols = sql.SQL(", ").join(map(sql.Identifier, self.all_columns))
        return sql.SQL(
            "INSERT INTO {table} AS t ({cols}) "
            "SELECT DISTINCT ON ({key}) {cols} FROM {stage} "
            "ORDER BY {key}, crawled_at DESC, kafka_offset DESC "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}, landed_at = now() "
            "WHERE (EXCLUDED.crawled_at, EXCLUDED.kafka_offset) > (t.crawled_at, t.kafka_offset)"
        ).format(
            table=sql.Identifier(self.table),
            stage=sql.Identifier(self.stage),
            cols=cols,
            key=sql.Identifier(self.key),
            updates=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
                for c in self.all_columns
                if c != self.key
            ),
        )

    def template(self) -> str:
        # Every value is a parameter; raw arrives as the record's JSON text and is cast to jsonb.
        return "(" + ", ".join("%s::jsonb" if c == "raw" else "%s" for c in self.all_columns) + ")"


def create_table(kind: KindSpec) -> sql.Composed:
    spec = TableSpec.for_kind(kind)
    columns = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(name), sql.SQL(column_type(f)), sql.SQL(" NOT NULL" if f.required else "")
        )
        for name, f in kind.fields.items()
    ]
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {table} ({columns}, "
        "crawled_at timestamptz NOT NULL, raw jsonb NOT NULL, kafka_topic text NOT NULL, "
        "kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL, "
        "landed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({key}))"
    ).format(
        table=sql.Identifier(spec.table), columns=sql.SQL(", ").join(columns), key=sql.Identifier(spec.key)
    )


def _fill_from_raw(table: str, name: str, spec: FieldSpec) -> sql.Composed:
    """The new column's values of the rows already there, read from their raw JSON."""
    source = (
        sql.SQL("raw -> {}").format(sql.Literal(name))
        if spec.type in JSON_TYPES
        else sql.SQL("(raw ->> {})::{}").format(sql.Literal(name), sql.SQL(column_type(spec)))
    )
    return sql.SQL("UPDATE {table} SET {col} = {source} WHERE raw ? {name}").format(
        table=sql.Identifier(table), col=sql.Identifier(name), source=source, name=sql.Literal(name)
    )


def prepare_tables(cur: PgCursor, kinds: Iterable[KindSpec]) -> list[str]:
    """Create or evolve the table of every kind (in the caller's transaction); returns the changes.

    Raises FatalError naming every change that cannot be applied safely, and what to do.
    """
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (LOCK,))
    changes: list[str] = []
    refused: list[str] = []
    for kind in kinds:
        table, wanted = TableSpec.for_kind(kind).table, declaration(kind)
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        existed = bool(cur.fetchone()[0])  # type: ignore[index]
        cur.execute(create_table(kind))
        cur.execute("SELECT declaration FROM crawlstore_schema WHERE table_name = %s", (table,))
        row = cur.fetchone()
        if row is None:
            missing = _missing_columns(cur, table, [*kind.fields])
            if missing:
                refused.append(
                    f"kind {kind.kind}: table {table} exists without the column(s) {', '.join(missing)}"
                )
                continue
            _record(cur, table, kind, wanted, "created" if not existed else "recorded as found")
            changes.append(f"{table}: {'created' if not existed else 'recorded'}")
            continue
        recorded = row[0]
        if recorded == wanted:
            continue  # prepared from this very declaration: nothing to compare or count
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        rows = int(cur.fetchone()[0])  # type: ignore[index]
        problems = unsafe_changes(recorded, wanted, rows)
        if problems:
            refused += [f"kind {kind.kind} (table {table}): {p}" for p in problems]
            continue
        added = added_fields(recorded, wanted)
        for name in added:
            f = kind.fields[name]
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}{}").format(
                    sql.Identifier(table),
                    sql.Identifier(name),
                    sql.SQL(column_type(f)),
                    sql.SQL(" NOT NULL" if f.required else ""),
                )
            )
            cur.execute(_fill_from_raw(table, name, f))
            filled = cur.rowcount
            cur.execute(
                "INSERT INTO crawlstore_schema_changes (table_name, change, detail) VALUES (%s, %s, %s)",
                (
                    table,
                    "add_column",
                    json.dumps({"column": name, "type": f.type, "filled_from_raw": filled}),
                ),
            )
            changes.append(
                f"{table}: added column {name} ({column_type(f)}), {filled} row(s) filled from raw"
            )
        if added:
            _record(cur, table, kind, wanted, None)
    if refused:
        raise FatalError(
            f"the declared kinds cannot be applied to PostgreSQL: {'; '.join(refused)}. {ADVICE}"
        )
    return changes


def _missing_columns(cur: PgCursor, table: str, columns: list[str]) -> list[str]:
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s",
        (table,),
    )
    present = {r[0] for r in cur.fetchall()}
    return [c for c in [*columns, "crawled_at", *LINEAGE] if c not in present]


def _record(cur: PgCursor, table: str, kind: KindSpec, wanted: dict[str, Any], change: str | None) -> None:
    cur.execute(
        "INSERT INTO crawlstore_schema (table_name, kind, schema_version, declaration) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT (table_name) DO UPDATE SET kind = EXCLUDED.kind, "
        "schema_version = EXCLUDED.schema_version, declaration = EXCLUDED.declaration, updated_at = now()",
        (table, kind.kind, kind.schema_version, json.dumps(wanted)),
    )
    if change is not None:
        cur.execute(
            "INSERT INTO crawlstore_schema_changes (table_name, change, detail) VALUES (%s, %s, %s)",
            (table, change.replace(" ", "_"), json.dumps(wanted)),
        )
