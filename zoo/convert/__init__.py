"""PyTorch <-> MindSpore conversion: checkpoint I/O, name rules, external layouts, strict loading."""
from zoo.convert.io import Checkpoint, ConversionError, read_checkpoint, write_checkpoint  # noqa: F401
from zoo.convert.core import (  # noqa: F401
    Loaded, Spec, convert_file, from_ms, load_into, load_into_ms, load_into_pt, load_state, ms_params,
    pt_state, spec, to_ms,
)
