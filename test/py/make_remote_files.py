"""Writes the files the remote-reading tests serve (test/remote.test.ts), with Debian's torch 1.13.

    /usr/bin/python3 test/py/make_remote_files.py OUT_DIR

big.pth          torch.save of a state dict with small tensors and one 1.0 GB float32 tensor of zeros.
                 Written through a file object that turns each all-zero write of 1 MiB or more into a
                 seek, so the file holds exactly the bytes torch.save wrote, the zero run as a hole
                 (sparse: a few KB on disk).
big.safetensors  the same tensors in the safetensors layout (header, small tensors, the zeros as a hole).
big_target.pth   a model's state dict that takes the small tensors of big.pth and has its own, smaller
                 embed.weight (a shape mismatch: merge keeps the target's).
interleaved.pth  tensors that merge loads (random values) between tensors it does not (zeros): one
                 only the pretrained file has, one whose shape differs, and small ones in between.
interleaved_target.pth  the target for it (one tensor float16, so merge casts it).

Prints a JSON summary (sizes, tensor keys) on stdout.
"""
import json
import os
import sys
import zipfile

import numpy as np
import torch

BIG_ELEMENTS = 250_000_000  # float32: 1.0 GB
HOLE_MIN = 1 << 20


class SparseWriter:
    """A file object for torch.save: large all-zero writes become seeks (holes)."""

    def __init__(self, path):
        self.f = open(path, "wb")
        self.pos = 0

    def write(self, data):
        view = memoryview(data).cast("B")
        n = len(view)
        if n >= HOLE_MIN and not np.frombuffer(view, dtype=np.uint8).any():
            self.f.seek(n, os.SEEK_CUR)
        else:
            self.f.write(view)
        self.pos += n
        return n

    def flush(self):
        self.f.flush()

    def close(self):
        self.f.truncate(self.pos)
        self.f.close()


def zeros_without_memory(out, shape):
    """A float32 tensor of zeros mapped from a sparse file: torch.zeros would fault in 1 GB of pages first."""
    numel = 1
    for n in shape:
        numel *= n
    hole = os.path.join(out, "zeros.tmp")
    with open(hole, "wb") as f:
        f.truncate(numel * 4)
    t = torch.from_file(hole, shared=False, size=numel, dtype=torch.float32).view(*shape)
    os.remove(hole)  # the mapping keeps the (empty) bytes
    return t


def save_sparse(obj, path):
    w = SparseWriter(path)
    torch.save(obj, w)
    w.close()


def small_tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3, generator=g),
        "conv.bias": torch.randn(8, generator=g),
    }


def main(out):
    summary = {}

    big = small_tensors(1)
    big["embed.weight"] = zeros_without_memory(out, (250_000, 1_000))
    big["fc.bias"] = torch.randn(10, generator=torch.Generator().manual_seed(2))
    assert big["embed.weight"].numel() == BIG_ELEMENTS
    path = os.path.join(out, "big.pth")
    save_sparse(big, path)
    # The archive as Python's zipfile sees it: every record present, the small ones intact (their CRC is
    # checked on read). torch.load of the 1 GB record would cost ~10 s of page faults here, for nothing
    # the seek-for-zeros writer could have changed.
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names[0] == "archive/data.pkl" and "archive/version" in names, names
        sizes = sorted(i.file_size for i in z.infolist() if "/data/" in i.filename)
        assert sizes[-1] == BIG_ELEMENTS * 4, sizes
        for i in z.infolist():
            if i.file_size < HOLE_MIN:
                z.read(i.filename)
    summary["big.pth"] = {"size": os.path.getsize(path), "disk": os.stat(path).st_blocks * 512, "records": names}

    # safetensors: u64 header length, JSON header padded with spaces to a multiple of 8, then the data.
    order = ["conv.weight", "conv.bias", "fc.bias", "embed.weight"]
    header, offset = {}, 0
    for k in order:
        n = big[k].numel() * 4
        header[k] = {"dtype": "F32", "shape": list(big[k].shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(out, "big.safetensors")
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for k in order[:-1]:
            f.write(big[k].numpy().tobytes())
        f.truncate(8 + len(text) + offset)  # embed.weight: 1 GB of zeros, a hole
    summary["big.safetensors"] = {"size": os.path.getsize(path), "disk": os.stat(path).st_blocks * 512}
    del big

    target = {k: torch.zeros_like(v) for k, v in small_tensors(3).items()}
    target["embed.weight"] = torch.zeros(100, 1_000)
    target["fc.weight"] = torch.zeros(10, 1_000)
    target["fc.bias"] = torch.zeros(10)
    torch.save(target, os.path.join(out, "big_target.pth"))

    g = torch.Generator().manual_seed(4)
    pretrained = {
        "l0.weight": torch.randn(1024, 1024, generator=g),  # 4 MiB, loaded
        "l0.bias": torch.randn(1024, generator=g),  # loaded
        "skip.weight": torch.zeros(2048, 2048),  # 16 MiB, only in the pretrained file
        "l1.weight": torch.randn(1024, 1024, generator=g),  # loaded, cast to float16
        "l1.bias": torch.randn(1024, generator=g),
        "head.weight": torch.zeros(1000, 1024),  # 4 MB, shape differs from the target's
        "l2.weight": torch.randn(2048, 1024, generator=g),  # 8 MiB, loaded
        "l2.bias": torch.randn(2048, generator=g),
    }
    save_sparse(pretrained, os.path.join(out, "interleaved.pth"))
    target = {
        "l0.weight": torch.zeros(1024, 1024),
        "l0.bias": torch.zeros(1024),
        "l1.weight": torch.zeros(1024, 1024, dtype=torch.float16),
        "l1.bias": torch.zeros(1024),
        "head.weight": torch.zeros(10, 1024),
        "l2.weight": torch.zeros(2048, 1024),
        "l2.bias": torch.zeros(2048),
        "new.weight": torch.ones(16),
    }
    torch.save(target, os.path.join(out, "interleaved_target.pth"))
    summary["interleaved.pth"] = {"size": os.path.getsize(os.path.join(out, "interleaved.pth"))}
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv[1])
