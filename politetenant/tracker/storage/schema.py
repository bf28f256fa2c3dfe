"""One schema for PostgreSQL and SQLite, as numbered migrations.

Each migration is written once with a few dialect placeholders, so both backends provably run the
same tables. Timestamps are epoch milliseconds (BIGINT) on both, which keeps comparisons identical.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    name: str
    bytes: str
    serial_pk: str


POSTGRES = Dialect("postgresql", bytes="BYTEA", serial_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
SQLITE = Dialect("sqlite", bytes="BLOB", serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT")

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "messages, recipients, records, links, events, objections, api tokens",
        [
            """CREATE TABLE api_tokens (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                secret_hash {bytes} NOT NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT
            )""",
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                created_at BIGINT NOT NULL,
                mode TEXT NOT NULL,
                subject {bytes} NOT NULL,
                from_name {bytes} NOT NULL,
                from_email {bytes} NOT NULL,
                list_name {bytes} NOT NULL,
                recipients INTEGER NOT NULL,
                tracked INTEGER NOT NULL,
                word_count INTEGER NOT NULL,
                flesch DOUBLE PRECISION,
                link_count INTEGER NOT NULL,
                created_by TEXT NOT NULL
            )""",
            "CREATE INDEX messages_created_at ON messages (created_at)",
            """CREATE TABLE recipients (
                id {serial_pk},
                message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                email_index {bytes} NOT NULL,
                email {bytes} NOT NULL,
                name {bytes},
                attributes {bytes}
            )""",
            "CREATE INDEX recipients_message ON recipients (message_id)",
            "CREATE INDEX recipients_email_index ON recipients (email_index)",
            """CREATE TABLE records (
                id {bytes} PRIMARY KEY,
                message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                attributes {bytes},
                subject_index {bytes}
            )""",
            "CREATE INDEX records_message ON records (message_id)",
            "CREATE INDEX records_subject_index ON records (subject_index)",
            """CREATE TABLE links (
                message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
                link_no INTEGER NOT NULL,
                url {bytes},
                text {bytes},
                PRIMARY KEY (message_id, link_no)
            )""",
            """CREATE TABLE events (
                event_id {bytes} PRIMARY KEY,
                record_id {bytes} NOT NULL,
                kind SMALLINT NOT NULL,
                link_no INTEGER,
                occurred_at BIGINT NOT NULL,
                country TEXT,
                region {bytes},
                city {bytes},
                os TEXT NOT NULL,
                device TEXT NOT NULL,
                browser TEXT NOT NULL,
                bot SMALLINT NOT NULL,
                read_ms INTEGER
            )""",
            "CREATE INDEX events_record ON events (record_id)",
            "CREATE INDEX events_occurred_at ON events (occurred_at)",
            """CREATE TABLE objections (
                subject_index {bytes} PRIMARY KEY,
                created_at BIGINT NOT NULL
            )""",
        ],
    ),
]

MIGRATIONS.append(
    (
        2,
        "append-only audit log with a keyed hash chain",
        [
            """CREATE TABLE audit (
                id {serial_pk},
                at BIGINT NOT NULL,
                token_id TEXT NOT NULL,
                role TEXT NOT NULL,
                action TEXT NOT NULL,
                subject_index {bytes},
                outcome TEXT NOT NULL,
                detail TEXT NOT NULL,
                key_version INTEGER NOT NULL,
                prev_hash {bytes},
                hash {bytes} NOT NULL
            )""",
            "CREATE INDEX audit_at ON audit (at)",
            "CREATE INDEX audit_action ON audit (action, at)",
        ],
    )
)

MIGRATIONS.append(
    (
        3,
        "bootstrap API tokens imported from the operator's Secret: at most one in force per role",
        [
            "ALTER TABLE api_tokens ADD COLUMN bootstrap_role TEXT",
            """CREATE UNIQUE INDEX api_tokens_one_bootstrap_per_role ON api_tokens (bootstrap_role)
                WHERE bootstrap_role IS NOT NULL AND revoked_at IS NULL""",
        ],
    )
)

MIGRATIONS.append(
    (
        4,
        "events indexed by (record, time): reports read each copy's hits in order and the message's first hit",
        [
            "CREATE INDEX events_record_time ON events (record_id, occurred_at)",
            "DROP INDEX events_record",  # the new index serves every look-up by record too
        ],
    )
)

MIGRATIONS.append(
    (
        5,
        "dashboard sessions: only the SHA-256 of each session cookie, the API token it came from, its expiry",
        [
            """CREATE TABLE ui_sessions (
                id_hash {bytes} PRIMARY KEY,
                token_id TEXT NOT NULL,
                role TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )""",
            "CREATE INDEX ui_sessions_expires_at ON ui_sessions (expires_at)",  # expired rows are swept at sign-in
        ],
    )
)

MIGRATIONS.append(
    (
        6,
        "PostgreSQL: per-record report figures folded as events arrive (reports.figures)",
        [
            # Drawn inside the inserting transaction: folds read the events above a watermark.
            "ALTER TABLE events ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY",
            "CREATE INDEX events_seq ON events (seq)",
            """CREATE TABLE record_figures (
                record_id {bytes} PRIMARY KEY REFERENCES records (id) ON DELETE CASCADE,
                message_id TEXT NOT NULL,
                first_hit BIGINT NOT NULL,
                first_people BIGINT,
                first_open BIGINT,
                open_kind SMALLINT,
                open_event {bytes},
                open_bot SMALLINT,
                device TEXT,
                os TEXT,
                browser TEXT,
                country TEXT,
                city {bytes},
                first_click BIGINT,
                read_ms INTEGER,
                reasons BIGINT NOT NULL,
                proxied BOOLEAN NOT NULL,
                privacy BOOLEAN NOT NULL,
                opens BIGINT NOT NULL,
                proxied_opens BIGINT NOT NULL,
                privacy_opens BIGINT NOT NULL,
                machine_opens BIGINT NOT NULL,
                machine_clicks BIGINT NOT NULL,
                clicks BIGINT NOT NULL,
                link_clicks BIGINT[] NOT NULL,
                max_link INTEGER,
                odd_click BOOLEAN NOT NULL,
                click_mask BIGINT NOT NULL,
                honeypot_bot BOOLEAN NOT NULL,
                gateway_click BOOLEAN NOT NULL
            )""",
            "CREATE INDEX record_figures_message ON record_figures (message_id)",
            "CREATE TABLE figures_folded (id SMALLINT PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL)",
            "INSERT INTO figures_folded VALUES (1, 0)",
            # Records some of whose events were deleted (retention by age): the next fold rebuilds them.
            "CREATE TABLE figures_stale (record_id {bytes} PRIMARY KEY)",
        ],
    )
)
#: Migrations of one backend only; the other records them as applied with nothing to do. SQLite,
#: one writer on one node, reports from its events directly.
ONLY: dict[int, str] = {6: POSTGRES.name}

LATEST = MIGRATIONS[-1][0]


def statements(dialect: Dialect, version: int) -> list[str]:
    for number, _, sql in MIGRATIONS:
        if number == version:
            if ONLY.get(number, dialect.name) != dialect.name:
                return []
            return [s.format(bytes=dialect.bytes, serial_pk=dialect.serial_pk) for s in sql]
    raise KeyError(version)


def pending(applied: set[int]) -> list[int]:
    return [number for number, _, _ in MIGRATIONS if number not in applied]
