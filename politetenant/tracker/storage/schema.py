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

MIGRATIONS.append(
    (
        7,
        "PostgreSQL: recipients and records checked against messages per statement, not per row",
        [
            # A foreign key checks each inserted row on its own (a query and a row lock per row): half
            # the server's time for a big registration, COPY in batches of 5,000. These triggers keep
            # what the key guaranteed, once per statement. Functions run as the caller (the app role
            # has SELECT/UPDATE on messages, DELETE on the children: all they need).
            """CREATE FUNCTION message_children_need_message() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                wanted TEXT[] := ARRAY(SELECT DISTINCT message_id FROM added);
                locked TEXT[];
                missing TEXT;
            BEGIN
                -- Locked as the key's check did: a concurrent DELETE of the message waits for this
                -- transaction. Missing means "not locked", so a message committed between the two
                -- queries cannot pass unlocked. Locked in id order: two writers never deadlock here.
                locked := ARRAY(SELECT id FROM messages WHERE id = ANY (wanted) ORDER BY id FOR KEY SHARE);
                SELECT w INTO missing FROM unnest(wanted) AS w WHERE w <> ALL (locked) LIMIT 1;
                IF missing IS NOT NULL THEN
                    RAISE EXCEPTION 'insert or update on table "%" names message % which does not exist',
                        TG_TABLE_NAME, missing
                        USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = 'message_id';
                END IF;
                RETURN NULL;
            END
            $$""",
            """CREATE TRIGGER recipients_need_message_on_insert AFTER INSERT ON recipients
                REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION message_children_need_message()""",
            """CREATE TRIGGER recipients_need_message_on_update AFTER UPDATE ON recipients
                REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION message_children_need_message()""",
            """CREATE TRIGGER records_need_message_on_insert AFTER INSERT ON records
                REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION message_children_need_message()""",
            """CREATE TRIGGER records_need_message_on_update AFTER UPDATE ON records
                REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION message_children_need_message()""",
            # An array, not IN (SELECT ...): whatever the planner guesses of the transition table, each
            # id is an index look-up (a hash semi-join would scan the table for every small group that
            # retention deletes). Deleting records still cascades to record_figures (its own key).
            """CREATE FUNCTION message_children_delete() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM recipients WHERE message_id = ANY (ARRAY(SELECT id FROM gone));
                DELETE FROM records WHERE message_id = ANY (ARRAY(SELECT id FROM gone));
                RETURN NULL;
            END
            $$""",
            """CREATE TRIGGER messages_delete_children AFTER DELETE ON messages
                REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION message_children_delete()""",
            # The key refused a new id for a message with children (ON UPDATE NO ACTION); nothing changes
            # an id, so refusing every change costs nothing and leaves no child pointing at an old id.
            """CREATE FUNCTION message_id_unchanged() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the id of message % cannot change', OLD.id
                    USING ERRCODE = 'foreign_key_violation', TABLE = TG_TABLE_NAME, COLUMN = 'id';
            END
            $$""",
            """CREATE TRIGGER messages_id_unchanged BEFORE UPDATE OF id ON messages
                FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION message_id_unchanged()""",
            # The keys refused TRUNCATE of messages without its children (CASCADE added them). Children
            # truncated in the same statement are empty before this fires: name them all, as tests do.
            """CREATE FUNCTION message_children_after_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT FROM recipients) OR EXISTS (SELECT FROM records) THEN
                    RAISE EXCEPTION 'cannot truncate messages without recipients and records'
                        USING ERRCODE = 'feature_not_supported', TABLE = TG_TABLE_NAME;
                END IF;
                RETURN NULL;
            END
            $$""",
            """CREATE TRIGGER messages_truncate_with_children AFTER TRUNCATE ON messages
                FOR EACH STATEMENT EXECUTE FUNCTION message_children_after_truncate()""",
            "ALTER TABLE recipients DROP CONSTRAINT recipients_message_id_fkey",
            "ALTER TABLE records DROP CONSTRAINT records_message_id_fkey",
        ],
    )
)
MIGRATIONS.append(
    (
        8,
        "erased records: the random ids of records an erasure deleted, so hits on them store nothing",
        [
            # The id and its message (where its links go), which name no one: the e-mail, name,
            # attributes and pseudonym went with the recipient and record rows (storage.erased).
            "CREATE TABLE erased_records (record_id {bytes} PRIMARY KEY, message_id TEXT NOT NULL)",
            "CREATE INDEX erased_records_message ON erased_records (message_id)",  # retention purges by message
        ],
    )
)
#: Migrations of one backend only; the other records them as applied with nothing to do. SQLite,
#: one writer on one node, reports from its events directly, and checks its foreign keys with an
#: in-process index probe per row (cheap), so keeps them.
ONLY: dict[int, str] = {6: POSTGRES.name, 7: POSTGRES.name}

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
