"""The Python way to turn a .pth into safetensors: torch.load, then safetensors.torch.save_file.

    python3 python_safetensors.py SRC OUT

Run with torch 2.6 + safetensors 0.4.5 (scripts/torch2.sh run DIR ...; torch 1.13 has no safetensors).
weights_only=True (torch 2.6's default); save_file writes through a buffered file and does not fsync.
"""
import sys

import torch
from safetensors.torch import save_file

src, out = sys.argv[1], sys.argv[2]
sd = torch.load(src, map_location='cpu', weights_only=True)
save_file(sd, out, metadata={'format': 'pt'})
print(f'{len(sd)} tensors')
