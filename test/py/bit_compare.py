"""What the merge judges share: a value by dotted key inside a checkpoint, and bit-exact tensor equality.

Bit for bit, so NaN payloads, -0.0 and subnormals count; bool is compared by value (1.13 cannot view it as
bytes). Imported by verify_merge.py and adapt_judge.py (their own folder is on sys.path when they run).
"""
import torch


def sub(obj, key):
    """obj[part] for each dotted part of key ('' is obj itself)."""
    for part in key.split('.') if key else []:
        obj = obj[part]
    return obj


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.contiguous(), b.contiguous()
    if a.dtype in (torch.bool,):
        return torch.equal(a, b)
    if a.numel() == 0:
        return True
    return torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))
