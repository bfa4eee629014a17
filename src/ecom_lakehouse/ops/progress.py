"""A file reader that draws a progress bar while an SDK reads it (uploads)."""
from __future__ import annotations

import sys


class ProgressReader:
    def __init__(self, fileobj, total: int, label: str, out=None, width: int = 30):
        self._f, self.total, self.label, self.width = fileobj, max(total, 1), label, width
        self.out = out or sys.stdout
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        if not chunk:  # end of file, already drawn at 100%
            return chunk
        self.done += len(chunk)
        filled = int(self.width * self.done / self.total)
        self.out.write(f"\r  {self.label:<24} [{'#' * filled}{' ' * (self.width - filled)}] {self.done / self.total:4.0%}")
        if self.done >= self.total:
            self.out.write("\n")
        self.out.flush()
        return chunk

    def __getattr__(self, name):  # seek/tell/etc. for SDKs that want them
        return getattr(self._f, name)
