"""The SQL of the PostgreSQL store, its schema migrations, and how driver errors read to people.

Every statement here is one round trip. Statements that write and check at once (a CreateTask
that must not revive a reserved name, a result fenced on its claim's dispatch count) do both in
one statement, so most operations need no explicit transaction.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from typing import TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from opentasks.domain.names import QueueName
from opentasks.domain.queue import Queue
from opentasks.storage.base import StoreUnusable, Windows
from opentasks.storage.codec import to_micros
from opentasks.storage.migrations import scripts
from opentasks.storage.rows import FAILED_ONLY, FINISHED_COLUMNS

Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

SCHEMA_LOCK = 0x6F70_656E_7461_736B  # "opentask": pg_advisory_xact_lock key of schema migrations
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
"""What the driver raises when the database refuses, fails or cannot be reached."""
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
"""Errors after which the same operation, run again at once, may well succeed."""

# -- queues ------------------------------------------------------------------------------------

QUEUE = "SELECT pk, config FROM queues WHERE parent = $1 AND queue_id = $2"
QUEUE_FOR_UPDATE = QUEUE + " FOR UPDATE"
QUEUE_RESERVED = "SELECT 1 FROM queue_tombstones WHERE parent = $1 AND queue_id = $2 AND expire_us > $3"
INSERT_QUEUE = (
    "INSERT INTO queues (parent, queue_id, state, from_queue_yaml, config) VALUES ($1, $2, $3, $4, $5)"
)
UNRESERVE_QUEUE = "DELETE FROM queue_tombstones WHERE parent = $1 AND queue_id = $2"
SAVE_QUEUE = "UPDATE queues SET state = $2, from_queue_yaml = $3, config = $4 WHERE pk = $1"
DELETE_QUEUE = """
WITH gone AS (DELETE FROM queues WHERE parent = $1 AND queue_id = $2 RETURNING parent, queue_id)
INSERT INTO queue_tombstones (parent, queue_id, expire_us) SELECT parent, queue_id, $3 FROM gone
ON CONFLICT (parent, queue_id) DO UPDATE SET expire_us = excluded.expire_us
RETURNING 1
"""
LIST_QUEUES = "SELECT config FROM queues WHERE parent = $1 AND queue_id > $2"
LIST_LOCATIONS = "SELECT DISTINCT parent FROM queues WHERE substr(parent, 1, $2) = $1 ORDER BY parent"
ALL_QUEUES = "SELECT config FROM queues"

# -- tasks ---------------------------------------------------------------------------------------

# A task row as finished_tasks keeps it (after its name, reason, finish and keep times).
_KEPT_COLUMNS = "schedule_us, spec, progress, body"
_FINISHED_COLUMNS = f"parent, queue_id, task_id, reason, finish_us, expire_us, {_KEPT_COLUMNS}"

_RESERVE_GONE = """
reserved AS (
    INSERT INTO task_tombstones (queue_pk, task_id, expire_us)
    SELECT queue_pk, task_id, CASE WHEN from_queue_yaml THEN $yaml ELSE $plain END FROM gone WHERE named
    ON CONFLICT (queue_pk, task_id) DO UPDATE SET expire_us = excluded.expire_us
)"""


def _reserve_gone(plain: int, yaml: int) -> str:
    """The CTE that reserves the names of the named rows of ``gone`` (queue_pk, task_id, named,
    from_queue_yaml) until parameter ``$plain``, or ``$yaml`` for queues from a queue.yaml."""
    return _RESERVE_GONE.replace("$yaml", f"${yaml}::bigint").replace("$plain", f"${plain}::bigint")


# Many CreateTasks in one statement (and one commit). Each row is placed in its queue (pk NULL:
# no such queue); a reserved name is refused in the INSERT itself, and a live one by ON CONFLICT.
# The answer says for each input row (n) whether it was added. Names must be distinct per batch.
CREATE_TASKS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::boolean[], $5::bigint[], $6::bigint[],
                         $7::text[], $8::bytea[], $9::bigint[])
        WITH ORDINALITY
        AS i (parent, queue_id, task_id, named, schedule_us, enqueue_us, spec, body, now_us, n)
),
placed AS (
    SELECT i.*, q.pk FROM input i LEFT JOIN queues q ON q.parent = i.parent AND q.queue_id = i.queue_id
),
added AS (
    INSERT INTO tasks (queue_pk, task_id, named, schedule_us, due_us, enqueue_us, spec, body)
    SELECT pk, task_id, named, schedule_us, schedule_us, enqueue_us, spec, body FROM placed p
    WHERE pk IS NOT NULL AND NOT (named AND EXISTS (
        SELECT 1 FROM task_tombstones t
        WHERE t.queue_pk = p.pk AND t.task_id = p.task_id AND t.expire_us > p.now_us))
    ORDER BY n
    ON CONFLICT (queue_pk, task_id) DO NOTHING
    RETURNING queue_pk, task_id
)
SELECT p.n, p.pk, a.task_id IS NOT NULL AS added
FROM placed p LEFT JOIN added a ON a.queue_pk = p.pk AND a.task_id = p.task_id
ORDER BY p.n
"""
TASK_COLUMNS = "seq, schedule_us, spec, progress, body"
# The queue's pk (NULL: no such queue), the task's columns (NULL: no such task) and whether its
# name is reserved, in one lookup.
FIND_TASK = """
SELECT q.pk, t.seq, t.schedule_us, t.spec, t.progress, t.body,
       EXISTS (SELECT 1 FROM task_tombstones r
               WHERE r.queue_pk = q.pk AND r.task_id = $3 AND r.expire_us > $4) AS reserved
FROM queues q LEFT JOIN tasks t ON t.queue_pk = q.pk AND t.task_id = $3
WHERE q.parent = $1 AND q.queue_id = $2
"""
TASK_FOR_UPDATE = f"""
SELECT {TASK_COLUMNS} FROM tasks
WHERE queue_pk = (SELECT pk FROM queues WHERE parent = $1 AND queue_id = $2) AND task_id = $3
FOR UPDATE
"""
LIST_TASKS = """
SELECT q.pk, t.seq, t.schedule_us, t.spec, t.progress, t.body
FROM queues q LEFT JOIN LATERAL (
    SELECT seq, schedule_us, spec, progress, body FROM tasks
    WHERE queue_pk = q.pk AND seq > $3 ORDER BY seq LIMIT $4
) t ON true
WHERE q.parent = $1 AND q.queue_id = $2
ORDER BY t.seq
"""
# Deletes the task and reserves its name in one statement; also answers whether the queue exists
# and whether the name was reserved before (for the NotFound message when nothing was deleted).
DELETE_TASK = f"""
WITH q AS (SELECT pk, from_queue_yaml FROM queues WHERE parent = $1 AND queue_id = $2),
gone AS (
    DELETE FROM tasks USING q WHERE tasks.queue_pk = q.pk AND tasks.task_id = $3
    RETURNING tasks.queue_pk, tasks.task_id, tasks.named, q.from_queue_yaml, {_KEPT_COLUMNS}
),
kept AS (
    INSERT INTO finished_tasks ({_FINISHED_COLUMNS})
    SELECT $1, $2, task_id, 'deleted', $4, $7, {_KEPT_COLUMNS} FROM gone WHERE $7::bigint IS NOT NULL
),
{_reserve_gone(5, 6)}
SELECT (SELECT pk FROM q) AS pk, (SELECT count(*) FROM gone) AS deleted,
       EXISTS (SELECT 1 FROM task_tombstones r, q
               WHERE r.queue_pk = q.pk AND r.task_id = $3 AND r.expire_us > $4) AS reserved
"""
PURGE_TASKS = f"""
WITH gone AS (
    DELETE FROM tasks WHERE queue_pk = $1 AND enqueue_us < $2 RETURNING task_id, named, {_KEPT_COLUMNS}
),
kept AS (
    INSERT INTO finished_tasks ({_FINISHED_COLUMNS})
    SELECT $4, $5, task_id, 'purged', $2, $6, {_KEPT_COLUMNS} FROM gone WHERE $6::bigint IS NOT NULL
)
INSERT INTO task_tombstones (queue_pk, task_id, expire_us) SELECT $1, task_id, $3 FROM gone WHERE named
ON CONFLICT (queue_pk, task_id) DO UPDATE SET expire_us = excluded.expire_us
"""

# -- dispatch ------------------------------------------------------------------------------------

_QUEUE_PK = "(SELECT pk FROM queues WHERE parent = $1 AND queue_id = $2)"
# Due tasks in (due, creation) order; rows another claimer holds are skipped, never waited for,
# so concurrent claimers (other nodes included) take disjoint tasks.
PICK_DUE = f"""
WITH picked AS MATERIALIZED (
    SELECT seq, due_us, schedule_us, spec, progress, body FROM tasks
    WHERE queue_pk = {_QUEUE_PK} AND due_us <= $3
    ORDER BY due_us, seq LIMIT $4
    FOR UPDATE SKIP LOCKED
)
SELECT {TASK_COLUMNS} FROM picked ORDER BY due_us, seq
"""
# The same under a fence: no row at all unless the node still holds the queue at that epoch with
# a lease running past now; then one row per task, or one row of NULLs when none is due. The
# lease row is locked FOR SHARE, so a node taking the queue over waits for this claim to commit
# (and then counts its tasks as leased).
PICK_DUE_FENCED = f"""
WITH owner AS MATERIALIZED (
    SELECT o.queue_pk FROM queue_owners o
    WHERE o.queue_pk = {_QUEUE_PK} AND o.node_id = $5 AND o.epoch = $6 AND o.expire_us > $3
    FOR SHARE
), picked AS MATERIALIZED (
    SELECT seq, due_us, schedule_us, spec, progress, body FROM tasks
    WHERE queue_pk = (SELECT queue_pk FROM owner) AND due_us <= $3
    ORDER BY due_us, seq LIMIT $4
    FOR UPDATE SKIP LOCKED
)
SELECT picked.seq, picked.schedule_us, picked.spec, picked.progress, picked.body
FROM owner LEFT JOIN picked ON true ORDER BY picked.due_us, picked.seq
"""
SAVE_CLAIMS = """
UPDATE tasks SET due_us = u.due_us, dispatch_count = u.dispatch_count, progress = u.progress
FROM unnest($1::bigint[], $2::bigint[], $3::integer[], $4::text[])
    AS u (seq, due_us, dispatch_count, progress)
WHERE tasks.seq = u.seq
"""
# Saves the claims and answers the earliest due time of the queue's other tasks (the statement
# reads the snapshot from before its own update, hence the claimed rows are left out).
SAVE_CLAIMS_NEXT_DUE = f"""
WITH saved AS ({SAVE_CLAIMS})
SELECT min(due_us) FROM tasks WHERE queue_pk = (SELECT pk FROM queues WHERE parent = $5 AND queue_id = $6)
    AND seq <> ALL ($1::bigint[])
"""
# Which of the given queues hold a due task: one probe of tasks_due per queue.
DUE_QUEUES = """
SELECT q.parent, q.queue_id FROM queues q
    JOIN unnest($1::text[], $2::text[]) AS w (parent, queue_id)
    ON q.parent = w.parent AND q.queue_id = w.queue_id
WHERE EXISTS (SELECT 1 FROM tasks t WHERE t.queue_pk = q.pk AND t.due_us <= $3)
"""
NEXT_DUE = f"SELECT min(due_us) FROM tasks WHERE queue_pk = {_QUEUE_PK}"
LEASED_TASKS = f"""
SELECT count(*) FROM tasks WHERE queue_pk = {_QUEUE_PK} AND due_us > $3 AND due_us <> schedule_us
"""
# Each result applies only while (queue, task ID, dispatch count) still match its claim; the
# dispatch count is compared in the DELETE and UPDATE themselves, so a row changed concurrently
# is checked again in its new version (READ COMMITTED re-evaluates their WHERE clause).
FINISH_ATTEMPTS = f"""
WITH r AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::text[], $9::text[], $10::bigint[]
    ) AS r (parent, queue_id, task_id, dispatch_count, schedule_us, progress, reason, finish_us)
),
m AS (
    SELECT t.seq, r.dispatch_count, r.schedule_us, r.progress, q.from_queue_yaml, r.parent, r.queue_id,
           r.reason, r.finish_us
    FROM r JOIN queues q ON q.parent = r.parent AND q.queue_id = r.queue_id
    JOIN tasks t ON t.queue_pk = q.pk AND t.task_id = r.task_id
),
gone AS (
    DELETE FROM tasks USING m
    WHERE tasks.seq = m.seq AND m.schedule_us IS NULL AND tasks.dispatch_count = m.dispatch_count
    RETURNING tasks.queue_pk, tasks.task_id, tasks.named, m.from_queue_yaml, m.parent, m.queue_id, m.reason,
              m.finish_us, tasks.schedule_us, tasks.spec, COALESCE(m.progress, tasks.progress) AS progress,
              tasks.body
),
kept AS (
    INSERT INTO finished_tasks ({_FINISHED_COLUMNS})
    SELECT parent, queue_id, task_id, reason, finish_us, $11, {_KEPT_COLUMNS} FROM gone
    WHERE $11::bigint IS NOT NULL AND reason IS NOT NULL
),
{_reserve_gone(7, 8)}
UPDATE tasks SET schedule_us = m.schedule_us, due_us = m.schedule_us, progress = m.progress
FROM m WHERE tasks.seq = m.seq AND m.schedule_us IS NOT NULL AND tasks.dispatch_count = m.dispatch_count
"""

KEEP_ATTEMPTS = """
INSERT INTO attempts (parent, queue_id, task_id, created_us, attempt, dispatch_us, duration_us, http_status,
                      failure, detail, headers, body, expire_us)
SELECT *, $13 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::integer[], $6::bigint[],
                          $7::bigint[], $8::integer[], $9::smallint[], $10::text[], $11::text[], $12::bytea[])
"""
FINISHED_PAGE = f"""
SELECT {FINISHED_COLUMNS} FROM finished_tasks
WHERE parent = $1 AND queue_id = $2 AND expire_us > $3 AND ($4::bigint = 0 OR seq < $4) AND {{reasons}}
ORDER BY seq DESC LIMIT $5
"""
SOME_REASONS = "reason = ANY ($6::text[]) AND redriven_as IS NULL"
_OF_TASK = "WHERE parent = $1 AND queue_id = $2 AND task_id = $3 AND expire_us > $4 ORDER BY seq"
TASK_ENDS = f"SELECT {FINISHED_COLUMNS} FROM finished_tasks {_OF_TASK}"
# Two redrives of one dead letter at once: the second waits for the first, then refuses.
TASK_ENDS_LOCKED = TASK_ENDS + " FOR UPDATE"
MARK_REDRIVEN = "UPDATE finished_tasks SET redriven_as = $2, redrive_us = $3 WHERE seq = $1"
TASK_ATTEMPTS = (
    """
SELECT parent, queue_id, task_id, created_us, attempt, dispatch_us, duration_us, http_status, failure, detail,
       headers, body FROM attempts """
    + _OF_TASK
)

# -- insights and upkeep ------------------------------------------------------------------------

# Per queue, on the tasks_schedule index: its tasks and those scheduled after now counted in one
# pass (two ranges took 1.8 times as long), and one lookup for the oldest.
TASK_COUNTS = """
SELECT q.parent, q.queue_id, c.n,
       (SELECT min(schedule_us) FROM tasks t WHERE t.queue_pk = q.pk),
       c.scheduled
FROM queues q CROSS JOIN LATERAL (
    SELECT count(*) AS n, count(*) FILTER (WHERE t.schedule_us > $1) AS scheduled
    FROM tasks t WHERE t.queue_pk = q.pk
) c
"""
# Dead letters per queue: the failed rows past their keep time that no sweep has deleted yet (few:
# found through finished_tasks_expiry), then per queue at most $1 (the cap + 1) more entries of
# the partial index finished_tasks_dead, so that no kept row is read for its expire_us and no
# count reads more than about the cap. {queue} narrows it to one queue ($3 and $4).
DEAD_LETTERS = f"""
WITH gone AS (
    SELECT parent, queue_id, count(*) AS n FROM finished_tasks
    WHERE expire_us <= $2 AND {FAILED_ONLY} GROUP BY parent, queue_id
)
SELECT q.parent, q.queue_id, kept.n - coalesce(gone.n, 0)
FROM queues q LEFT JOIN gone ON gone.parent = q.parent AND gone.queue_id = q.queue_id
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM finished_tasks f
        WHERE f.parent = q.parent AND f.queue_id = q.queue_id AND {FAILED_ONLY}
        LIMIT $1 + coalesce(gone.n, 0)
    ) capped
) kept
WHERE true {{queue}}
"""
DEAD_LETTERS_OF_ONE = "AND q.parent = $3 AND q.queue_id = $4"


def one_queue(first: int) -> str:
    """The condition on a queue's parent and ID, as parameters ``$first`` and the next."""
    return f"AND parent = ${first} AND queue_id = ${first + 1}"


QUEUE_PK = "SELECT pk FROM queues WHERE parent = $1 AND queue_id = $2"
# A node adds to its own rows (one per queue and minute) and deletes every node's rows of minutes
# more than an hour before its latest (few: one minute's rows, every few seconds).
ADD_OUTCOMES = """
WITH pruned AS (DELETE FROM outcomes WHERE minute_us < $7)
INSERT INTO outcomes (node_id, parent, queue_id, minute_us, succeeded, failed)
SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
ON CONFLICT (parent, queue_id, minute_us, node_id) DO UPDATE
SET succeeded = outcomes.succeeded + excluded.succeeded, failed = outcomes.failed + excluded.failed
"""
OUTCOMES = """
SELECT parent, queue_id, minute_us, sum(succeeded), sum(failed) FROM outcomes WHERE minute_us >= $1 {queue}
GROUP BY minute_us, parent, queue_id ORDER BY minute_us, parent, queue_id
"""

# One bounded batch of expired tombstones; rows another node is sweeping are skipped.
SWEEP = {
    table: f"""
DELETE FROM {table} WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM {table} WHERE expire_us <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED))
"""
    for table in ("task_tombstones", "queue_tombstones", "finished_tasks", "attempts")
}

_PLAIN_QUEUE = Queue(QueueName("-", "-", "-"))
_YAML_QUEUE = Queue(QueueName("-", "-", "-"), from_queue_yaml=True)


def task_windows(windows: Windows) -> tuple[int, int]:
    """Until when finished or deleted task names stay reserved, in microseconds: in ordinary
    queues and in queues from a queue.yaml (the rule of :meth:`Windows.task_until`)."""
    return to_micros(windows.task_until(_PLAIN_QUEUE)), to_micros(windows.task_until(_YAML_QUEUE))


# The first server to ask creates a secret; every server reads the same one.
ADD_SECRET = "INSERT INTO opentasks_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"
SECRET = "SELECT value FROM opentasks_secrets WHERE name = $1"


# -- schema --------------------------------------------------------------------------------------


def latest_schema() -> int:
    """The newest schema version this code knows (the number of its last migration)."""
    return max(number for number, _ in scripts("postgresql"))


async def check_schema(conn: Conn, where: str) -> None:
    """StoreUnusable unless the schema is exactly this code's (for tools that must not migrate)."""
    found = await conn.fetchval("SELECT to_regclass('opentasks_schema')")
    version = (await conn.fetchval("SELECT max(version) FROM opentasks_schema") or 0) if found else 0
    latest = latest_schema()
    if version != latest:
        raise StoreUnusable(
            f"the PostgreSQL database {where} has schema version {version}, and this opentasks "
            f"reads version {latest}: run the opentasks version of the servers (starting a server "
            "of this version upgrades the schema)"
        )


async def migrate(conn: Conn, where: str) -> int:
    """Bring the schema up to date in one transaction; returns its version.

    The transaction holds an advisory lock, so servers starting together migrate one after the
    other (the later ones find nothing to do). StoreUnusable if the schema is newer than this
    code."""
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        # Created only when missing: a user who may only read and write can still open a database
        # that is up to date.
        if await conn.fetchval("SELECT to_regclass('opentasks_schema')") is None:
            await conn.execute("CREATE TABLE opentasks_schema (version integer NOT NULL)")
        version = await conn.fetchval("SELECT max(version) FROM opentasks_schema") or 0
        latest = latest_schema()
        if version > latest:
            raise StoreUnusable(
                f"the PostgreSQL database {where} has schema version {version}, newer than this "
                f"opentasks understands (up to {latest}): it was written by a newer opentasks. Run "
                "that version, or restore a backup taken before the upgrade (see docs/postgresql.md)"
            )
        for number, sql in scripts("postgresql"):
            if number > version:
                await conn.execute(sql)
        if latest > version:
            await conn.execute("DELETE FROM opentasks_schema")
            await conn.execute("INSERT INTO opentasks_schema (version) VALUES ($1)", latest)
        return max(version, latest)


# -- messages ------------------------------------------------------------------------------------


def target(dsn: str) -> str:
    """``host:port/database`` that ``dsn`` connects to, with libpq's defaults and ``PG*``
    variables filling the gaps (for messages; never the password)."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = unquote(parts.hostname or "") or query.get("host") or os.environ.get("PGHOST") or "localhost"
    try:
        port = str(parts.port or "") or query.get("port") or os.environ.get("PGPORT") or "5432"
    except ValueError:
        port = "?"
    user = unquote(parts.username or "") or query.get("user") or os.environ.get("PGUSER") or _os_user()
    database = unquote(parts.path.lstrip("/")) or query.get("dbname") or os.environ.get("PGDATABASE") or user
    return f"{host}:{port}/{database}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def reason(error: BaseException) -> str:
    """The driver's reason for ``error`` on one line."""
    if isinstance(error, TimeoutError | asyncio.TimeoutError) and not str(error):
        return "timed out"
    text = " ".join(str(error).split()).rstrip(".")
    return text or type(error).__name__
