"""Every use of a private API of Ray or Optuna, one module per library.

Each function says why no public API serves. When a new release moves one of these, the fix is
here, and ``tests/test_versions.py`` names the releases the project was tested with.
"""
