#!/usr/bin/python3
"""Prints the byte ranges of a torch zip checkpoint's tensor records, for bench/run.mjs.

    python3 bench/py/zip_ranges.py FILE

One JSON object: {size, ranges: [[start, end), ...]} where each range is the stored data of a `<prefix>/data/<n>`
record (local header excluded). Uses only the standard library (zipfile + struct); any python3 works.
"""
import json
import os
import struct
import sys
import zipfile


def main(path):
    ranges = []
    with open(path, 'rb') as f, zipfile.ZipFile(f) as z:
        for info in z.infolist():
            parts = info.filename.split('/')
            if len(parts) != 3 or parts[1] != 'data':
                continue
            f.seek(info.header_offset)
            hdr = f.read(30)
            sig, = struct.unpack('<I', hdr[:4])
            if sig != 0x04034b50:
                raise SystemExit('bad local header for %s' % info.filename)
            name_len, extra_len = struct.unpack('<HH', hdr[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            ranges.append([start, start + info.compress_size])
    print(json.dumps({'size': os.path.getsize(path), 'ranges': sorted(ranges)}))


if __name__ == '__main__':
    main(sys.argv[1])
