"""The Ray Tune side of a search: the trainable, the searcher, the scheduler and callbacks."""
