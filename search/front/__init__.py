"""Pareto fronts, hypervolume, the selection of a front and a model, and their plots."""
