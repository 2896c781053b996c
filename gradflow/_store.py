"""Finished chunks of a batch on disk, so that an interrupted run resumes where it stopped."""

import hashlib
import json
import pathlib

import numpy as np


class ChunkStore:
    """A directory of finished chunks (`chunk_000000.npz`, ...), each the flat list of a
    chunk's output arrays, and a `fingerprint.json` naming the run they belong to.

    A store opened with another run's fingerprint refuses the directory rather than mix
    the chunks of two runs.
    """

    def __init__(self, directory: "str | pathlib.Path", fingerprint: str):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tag = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
        meta = self.directory / "fingerprint.json"
        if meta.exists() and json.loads(meta.read_text())["tag"] != self.tag:
            raise ValueError(
                f"`checkpoint_dir` {str(self.directory)!r} holds chunks of a different "
                "run (other data, grid or options). Use a new directory, or delete it."
            )
        meta.write_text(json.dumps({"tag": self.tag, "fingerprint": fingerprint}))

    def _path(self, i: int) -> pathlib.Path:
        return self.directory / f"chunk_{i:06d}.npz"

    def load(self, i: int) -> "list[np.ndarray] | None":
        """Chunk `i`'s arrays, or `None` if it has not finished."""
        path = self._path(i)
        if not path.exists():
            return None
        with np.load(path) as data:
            return [data[f"leaf_{j}"] for j in range(len(data.files))]

    def save(self, i: int, leaves: "list[np.ndarray]") -> None:
        # Write then rename, so a crash mid-write never leaves a truncated chunk.
        tmp = self._path(i).with_suffix(".tmp.npz")
        np.savez(tmp, **{f"leaf_{j}": leaf for j, leaf in enumerate(leaves)})
        tmp.replace(self._path(i))
