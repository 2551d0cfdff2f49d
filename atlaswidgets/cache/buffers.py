"""Capture's per-sample columns, written batch by batch into chunks and joined once at the end.

Why chunks and not one tensor grown by doubling: growing a tensor copies it, and while it is
copied the old and the new one are both held, so data of unknown length (an iterator, a
DataLoader without a length) peaked at twice the cache and more. Here each column is a list of
chunks of about ``CHUNK_BYTES``; a batch goes into the last chunk, or starts a new one when it does
not fit (the rest of the old chunk is never written). At the end a column of one chunk is a view
of it (no copy); a column of several is copied once into a new tensor, chunk by chunk, each chunk
released as soon as it is copied. On the CPU the chunks are anonymous memory maps: the operating
system hands out their pages only when they are written (an unwritten tail costs no memory) and
takes them back the moment the last view of a chunk is dropped, whatever the allocator's heap
looks like. The joined tensor's pages are likewise touched only as each chunk is copied in, so the
peak is the cache plus one chunk, not twice the cache.

When the data announces its length, the first chunk holds all of it: one chunk, no copy at all.
"""

from __future__ import annotations

import math
import mmap

import torch

__all__ = ["Columns", "CHUNK_BYTES"]

CHUNK_BYTES = 8 << 20  # the largest column's chunk; the join's overhead is one chunk


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor; on the CPU backed by an anonymous memory map (see module doc)."""
    numel = math.prod(shape)
    if device.type != "cpu" or numel == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    buf = mmap.mmap(-1, numel * itemsize)
    # the tensor keeps the map alive; the map is unmapped when the last view of it is freed
    return torch.frombuffer(buf, dtype=dtype, count=numel).view(shape)


class Columns:
    """Per-sample columns filled batch by batch.

    specs : dict key -> (per-sample shape, dtype, device); a column holds (n, *shape)
    capacity : the number of samples the data announces, or None when unknown
    chunk_bytes : size of the largest column's chunk (the others hold as many samples)

    ``chunks`` lists the chunks made (each a dict key -> tensor plus "used" and "size" in
    samples); ``copies`` counts the columns that ``take`` had to copy (0 with one chunk).
    """

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], torch.dtype, torch.device]],
                 capacity: int | None = None, chunk_bytes: int = CHUNK_BYTES):
        self.specs = dict(specs)
        widest = max((math.prod(s) * torch.empty((), dtype=d).element_size() for s, d, _ in specs.values()),
                     default=1)
        self.chunk_samples = max(1, chunk_bytes // max(widest, 1))
        self.capacity = capacity
        self.chunks: list[dict] = []
        self.n = 0
        self.copies = 0

    def views(self, n: int) -> dict[str, torch.Tensor]:
        """Where the next ``n`` samples go: a view (n, *shape) of each column, all in one chunk."""
        last = self.chunks[-1] if self.chunks else None
        if last is None or last["used"] + n > last["size"]:
            size = self.capacity if (last is None and self.capacity) else self.chunk_samples
            size = max(size, n)
            last = {"used": 0, "size": size,
                    "data": {k: _empty((size, *s), d, dev) for k, (s, d, dev) in self.specs.items()}}
            self.chunks.append(last)
        a = last["used"]
        last["used"] += n
        self.n += n
        return {k: t[a : a + n] for k, t in last["data"].items()}

    def take(self) -> dict[str, torch.Tensor]:
        """Every column as one tensor (n, *shape), the chunks released as they are copied.

        Callers must drop the views ``views`` gave them first, or the chunks stay alive.
        """
        chunks, self.chunks = self.chunks, []
        out = {}
        for key, (shape, dtype, device) in self.specs.items():
            if len(chunks) == 1:
                out[key] = chunks[0]["data"].pop(key)[: chunks[0]["used"]]
                continue
            whole = torch.empty((self.n, *shape), dtype=dtype, device=device)
            at = 0
            for chunk in chunks:
                part = chunk["data"].pop(key)[: chunk["used"]]
                whole[at : at + len(part)].copy_(part)
                at += len(part)
                del part  # this chunk of this column is freed here
            out[key] = whole
            self.copies += 1
        return out
