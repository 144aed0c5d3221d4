"""Cluster campaigns: slow stage instances as Slurm or PBS batch jobs.

Right after collection the campaign submits every missing slow instance, upstream first, with
job dependencies; tests then wait on the shared store. The job runs
``python -m pytest_physpipe.worker``, which computes the instance with the same runner a local
run uses and commits it to the store. No job of a run outlives it unnoticed.
"""
