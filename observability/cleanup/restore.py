"""Put the rows of a backup file back, exactly, in one transaction."""

from __future__ import annotations

import json
from pathlib import Path

from django.db import IntegrityError, connections, transaction

from observability import config
from observability.cleanup import backup, engine, records
from observability.cleanup.locking import CleanupLock
from observability.cleanup.report import CleanupReport
from observability.exceptions import BadInput

#: Columns restored per table (the bot's schema); ``json_populate_recordset`` maps them
#: from each row's JSON with the table's own types, so every value comes back as it was.
_COLUMNS = {
    "whatsapp_auth": ("company_id", "creds", "created_at", "updated_at"),
    "whatsapp_keys": (
        "company_id",
        "key_type",
        "key_id",
        "value",
        "created_at",
        "updated_at",
        "expires_at",
    ),
}


def _counts(content: backup.Backup) -> records.Counts:
    counts: records.Counts = {}
    for table, rows in content.rows.items():
        for row_json in rows:
            row = json.loads(row_json)
            kind = "whatsapp_auth" if table == "whatsapp_auth" else row.get("key_type", "?")
            records.add(counts, str(row.get("company_id")), kind)
    return counts


def restore_backup(
    path: str | Path, *, apply: bool = False, started_by: str = "command"
) -> CleanupReport:
    """
    Re-insert every row of a backup file, or (by default) check it and count its rows.

    Restoring needs INSERT on the two WhatsApp tables, which the production role of this
    project does not have: run it with a role that does. Nothing is overwritten: if any row
    exists already, the whole restore is rolled back and refused.

    Args:
        path: the backup file (``.jsonl.gz``) recorded in the run's ``backup_path``.
        apply: insert the rows; False only reads and checks the file.
        started_by: who started it, for the record.

    Returns:
        The report: ``rows_seen`` holds the rows in the file by session and key type
        (``whatsapp_auth`` for auth rows); ``parameters.restored`` how many were inserted.

    Raises:
        BadInput: not a complete backup file, or some rows exist already.

    """
    content = backup.read(path)  # refuses a bad file before anything is recorded
    alias = config.bot_database_alias()
    parameters = {
        "path": str(path),
        "backup_run_id": content.header.get("run_id"),
        "session_id": content.header.get("session_id"),
        "rows": content.total,
    }

    def body(report: CleanupReport, recorder: records.RunRecorder, lock: CleanupLock) -> None:
        report.rows_seen = _counts(content)
        report.total_seen = records.total(report.rows_seen)
        recorder.save(rows_seen=report.rows_seen, total_seen=report.total_seen)
        if not apply:
            return
        lock.ensure_held()
        inserted = 0
        try:
            with transaction.atomic(using=alias), connections[alias].cursor() as cursor:
                engine.set_local_timeouts(cursor)
                for table in backup.TABLES:
                    rows = content.rows[table]
                    if not rows:
                        continue
                    columns = ", ".join(_COLUMNS[table])
                    cursor.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {columns} "  # noqa: S608
                        f"FROM json_populate_recordset(NULL::{table}, %s::json)",
                        ["[" + ",".join(rows) + "]"],
                    )
                    inserted += cursor.rowcount
        except IntegrityError as error:
            raise BadInput(
                "Some rows of the backup exist already (the session was recreated?); nothing "
                "was restored. Remove the conflicting session first or restore by hand."
            ) from error
        report.parameters["restored"] = inserted
        recorder.save(parameters=report.parameters)

    return engine.execute_run(
        operation="restore",
        parameters=parameters,
        started_by=started_by,
        apply=apply,
        alias=alias,
        body=body,
        tables=backup.TABLES,
    )
