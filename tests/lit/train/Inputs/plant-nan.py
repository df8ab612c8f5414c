"""Writes a copy of a safetensors file with one f32 element set to NaN.

Usage: plant-nan.py IN.safetensors OUT.safetensors TENSOR INDEX
(INDEX is a flat row-major index into TENSOR). The planted bug of
check-numerics.test: a corrupt weight that train.check_numerics must trace
to the first op that reads it.
"""
import json
import struct
import sys

src, dst, name, index = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = open(src, "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
entry = header[name]
assert entry["dtype"] == "F32", entry
at = 8 + n + entry["data_offsets"][0] + 4 * index
assert at + 4 <= 8 + n + entry["data_offsets"][1], "index past the tensor"
body = bytearray(data[8 + n:])
body[at - 8 - n:at - 8 - n + 4] = struct.pack("<f", float("nan"))
# The edited file has no kiln checksum (like a file from elsewhere), so it
# loads; the NaN is what is wrong with it.
header.get("__metadata__", {}).pop("kiln.xxh3", None)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + bytes(body))
