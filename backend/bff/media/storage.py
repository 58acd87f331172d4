"""Finished images on disk: MEDIA_DIR/<job_id>/<index>.png plus job.json, kept for a bounded time.

Every path is built from a job id the BFF generated (32 hex characters) and an integer
index, both checked here again; names coming from ComfyUI or a caller never become paths.
The sweep only ever removes directories whose names are job ids.
"""

import logging
import os
import re
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger("bff.media")

JOB_ID = re.compile(r"^[0-9a-f]{32}$")
JOB_ID_PATTERN = JOB_ID.pattern
MAX_IMAGES_PER_JOB = 64
META_FILE = "job.json"


def new_job_id() -> str:
    return uuid.uuid4().hex


class StoredJob(BaseModel):
    """What survives a restart: who owns the images, and how many there are."""

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    owner: str
    workflow: str
    provider: str
    images: int = Field(ge=1, le=MAX_IMAGES_PER_JOB)
    progress_max: int = Field(ge=0)
    created_at: datetime
    finished_at: datetime


class MediaStore:
    def __init__(self, root: Path, retention_hours: float):
        self.root = root.resolve()
        self.retention = timedelta(hours=retention_hours)

    def _job_dir(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError("not a job id")
        return self.root / job_id

    def image_path(self, job_id: str, index: int) -> Path | None:
        """The stored PNG, or None; never a path outside the media directory."""
        if not JOB_ID.match(job_id) or not 0 <= index < MAX_IMAGES_PER_JOB:
            return None
        path = self._job_dir(job_id) / f"{index}.png"
        if path.resolve().parent != self.root / job_id or not path.is_file():
            return None
        return path

    def save(self, stored: StoredJob, images: list[bytes]) -> None:
        """Writes the images, then job.json last: a directory without it is an unfinished write."""
        directory = self._job_dir(stored.job_id)
        directory.mkdir(parents=True, exist_ok=True)
        for index, data in enumerate(images):
            self._write(directory / f"{index}.png", data)
        self._write(directory / META_FILE, stored.model_dump_json().encode())

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)

    def _job_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [entry for entry in self.root.iterdir() if JOB_ID.match(entry.name) and entry.is_dir() and not entry.is_symlink()]

    def _read(self, directory: Path) -> StoredJob | None:
        try:
            stored = StoredJob.model_validate_json((directory / META_FILE).read_bytes())
        except (OSError, ValidationError):
            return None
        return stored if stored.job_id == directory.name else None

    def read(self, job_id: str) -> StoredJob | None:
        """One finished job on disk, if it is still within the retention (any replica wrote it: shared storage)."""
        if not JOB_ID.match(job_id):
            return None
        directory = self._job_dir(job_id)
        stored = self._read(directory)
        return None if stored is None or self._expired(directory, stored, datetime.now(UTC)) else stored

    def _expired(self, directory: Path, stored: StoredJob | None, now: datetime) -> bool:
        if stored is not None:
            return now - stored.finished_at > self.retention
        try:
            modified = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
        except OSError:
            return False
        return now - modified > self.retention

    def load(self) -> list[StoredJob]:
        """Finished jobs on disk that are still within the retention."""
        now = datetime.now(UTC)
        jobs = [self._read(directory) for directory in self._job_dirs()]
        return [job for job in jobs if job is not None and not self._expired(self.root / job.job_id, job, now)]

    def sweep(self) -> list[str]:
        """Removes job directories older than the retention; returns their ids."""
        started = time.monotonic()
        now = datetime.now(UTC)
        removed = []
        for directory in self._job_dirs():
            if self._expired(directory, self._read(directory), now):
                shutil.rmtree(directory, ignore_errors=True)
                removed.append(directory.name)
        if removed:
            log.info("removed %d expired image jobs in %.0f ms", len(removed), (time.monotonic() - started) * 1000)
        return removed
