"""A secret kept in a file of its own: read when it exists, generated there the first time."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from sluicegate.core.errors import ConfigurationError


def kept_secret(path: Path, min_length: int) -> str:
    """The secret stored at `path`, created (mode 0600) when there is none yet."""
    if path.exists():
        value = path.read_text().strip()
        if len(value) < min_length:
            raise ConfigurationError(
                "SLUICEGATE_SECRET_KEY", f"the stored key in {path} is too short; restore it"
            )
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # Write aside, then link into place: link fails if the file exists, so two processes
    # starting at once agree on one key and nobody ever reads a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        temporary.unlink()
    return value
