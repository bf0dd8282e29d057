#!/usr/bin/python3
# // clang-format off   <- not C++
"""A real safetensors loader for tests/bench/mount-read: Debian's numpy (python3-numpy, run with
/usr/bin/python3), the way numpy-based loaders read a checkpoint.

  numpy_loader.py FILE

Parses the header itself (8-byte little-endian length N, N bytes of JSON: per tensor its dtype,
shape and data_offsets relative to the first byte after the header), maps the file with
numpy.memmap, builds an ndarray view of every tensor and copies each one out into a new array
(as a loader that moves the weights into its own memory does), so every byte of tensor data is
read. Prints "SECONDS BYTES TENSORS": the time from open to the last copy (numpy's import is not
counted), the bytes of tensor data copied, the number of tensors. Fails unless the tensors cover
the data section exactly.
"""

import json
import struct
import sys
import time

import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,  # numpy has no bf16
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: numpy_loader.py FILE")
    path = sys.argv[1]
    t0 = time.monotonic()
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    start = 8 + hlen
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    data_len = mm.shape[0] - start
    spans, copied, check = [], 0, 0
    for name, t in header.items():
        dtype = np.dtype(DTYPES[t["dtype"]])
        shape = tuple(t["shape"])
        lo, hi = t["data_offsets"]
        count = 1
        for d in shape:
            count *= d
        if hi - lo != count * dtype.itemsize or hi > data_len:
            sys.exit(f"numpy_loader: {path}: tensor {name}: bad data_offsets {lo}..{hi}")
        view = mm[start + lo:start + hi].view(dtype).reshape(shape)  # no copy: the mapped pages
        out = np.array(view, copy=True)  # reads every byte of the tensor
        copied += out.nbytes
        if out.size:
            check ^= int(out.reshape(-1).view(np.uint8)[-1])
        spans.append((lo, hi))
    spans.sort()
    pos = 0
    for lo, hi in spans:
        if lo != pos:
            sys.exit(f"numpy_loader: {path}: the tensors leave a gap or overlap at {pos}")
        pos = hi
    if pos != data_len:
        sys.exit(f"numpy_loader: {path}: the tensors cover {pos} of {data_len} data bytes")
    del mm
    print(f"{time.monotonic() - t0:.6f} {copied} {len(spans)}")
    return check


if __name__ == "__main__":
    main()
