"""What a run is asked to do, checked before anything runs: the settings (settings.py), the space
file (spaces.py) and its configs sampled dry (sampling.py). Imports nothing else of search/, so
the analysis can read a run's settings without the engine.
"""
