"""xdist as the local scheduler: everything that knows about xdist lives here.

It is registered only when xdist is active. Values decided once on the controller (run id,
store, resource budget) reach the workers through ``workerinput``; workers send their records
back through ``workeroutput``; ``--physpipe-dist`` places tests so that shared, expensive
stages start early and no worker waits on a lock while other work is ready.
"""
