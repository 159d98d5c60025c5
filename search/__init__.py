"""The search layer (the top one): the experiment file, Ray Tune and Optuna, MLflow, the CLI.

Rooms: :mod:`.samplers` (strategies), :mod:`.front` (Pareto, hypervolume, selection, plots),
:mod:`.tracking` (the only code that imports MLflow), :mod:`.tune` (the Ray side: trainable,
scheduler, searcher, callbacks), :mod:`.compat` (private APIs of Ray and Optuna). The driver,
resume, replay, reproduce, export, the CLI and the Python API are modules of their own.
"""
