"""Every use of a private part of torch-pruning, in one module (``torch_pruning.py``)."""
