#!/usr/bin/env python3
"""gen_st_fixture.py — writes tests/data/st_python.safetensors with the real
Python safetensors package, so test_safetensors.c checks quench's reader
against an independent writer. Run once by hand; the output is committed:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install safetensors numpy
    /tmp/v/bin/python tests/data/gen_st_fixture.py tests/data/st_python.safetensors
(numpy has no bfloat16/float8, so those dtypes are covered by the C round
trip tests only.)
"""
import sys

import numpy as np
from safetensors.numpy import save_file

tensors = {
    "f32": (np.arange(6, dtype=np.float32) * 0.5 - 1.0).reshape(2, 3),
    "f16": np.arange(5, dtype=np.float16) / np.float16(4),
    "f64": np.array([3.25, -1e300], dtype=np.float64),
    "i64": np.array([-1, 0, 1 << 40], dtype=np.int64),
    "i32": np.array([7, -7, 2**31 - 1, -(2**31)], dtype=np.int32),
    "u8": (250 + np.arange(8) % 6).astype(np.uint8).reshape(2, 2, 2),
}
save_file(tensors, sys.argv[1], metadata={"format": "np", "made_by": "safetensors"})
