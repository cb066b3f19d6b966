"""`zoo bench` (command.py): the twins' speed side by side (speed.py), its reports (report.py), the layer-level halo
attention benchmark (layers.py); parameter counts and multiply-adds one can check against the published ones
(flops.py)."""
