"""Writes that never leave a half-written file or folder behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write data to path so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it normal permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig, path: str | os.PathLike, dpi: int = 150) -> None:
    """Render a matplotlib figure to PNG and write it atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it is fsynced and renamed to `final`
    (replacing an existing one), on failure it is removed. A crash leaves only a `.tmp-` folder,
    which readers ignore."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result should read like any folder
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append rows durably: one write, then fsync, so a kill loses at most a torn last line."""
    if not rows:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The complete rows of a JSON Lines file ([] when absent); a torn last line (a writer killed
    mid-write, or one still writing) is left out and left alone."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]


def read_jsonl_repairing(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file that this process is about to append to, cutting off a torn last
    line so that the next append starts on a clean line."""
    rows = read_jsonl(path)
    path = Path(path)
    if path.exists():
        data = path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete != len(data):
            with open(path, "r+b") as f:
                f.truncate(complete)
    return rows


class DiskFull(OSError):
    """A write ran out of space; the message names the folder and the space needed."""


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


def lock_folder(folder: Path, what: str):
    """Take the exclusive lock of `folder` (an OS lock on <folder>/.lock, which the kernel drops when
    the process ends, however it ends, so a killed run leaves no stale lock). Returns the open lock
    file: keep it, and close it to release. Raises FolderBusy naming the folder and the holder's pid."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")  # noqa: SIM115 (held open for as long as the lock is)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderBusy(f"{folder} is in use by another {what} (pid {holder}); wait for it to end, or use another folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def remove_leftovers(folder: Path) -> list[Path]:
    """Delete what an interrupted atomic write left in `folder`: atomic_dir's .tmp-* folders and
    atomic_write_bytes' .<name>.*.tmp files; returns them."""
    found = sorted({*folder.glob(".tmp-*"), *(p for p in folder.glob(".?*.*.tmp") if p.is_file())}) if folder.is_dir() else []
    for path in found:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return found


def import_file(path: Path, name: str):
    """Run the Python file `path` as the module `name` (registered in sys.modules while it runs, as
    an import would, and taken out again when it raises) and return it."""
    import importlib.util
    import sys

    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 8 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()
