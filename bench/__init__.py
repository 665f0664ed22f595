"""httpqueue's benchmark suite: ``python -m bench.run [--scenarios ...] [--quick]``.

It starts everything itself on loopback (its own Redis, the API, the worker(s),
a fast callback receiver and, for comparison, a plain Celery worker), drives
each scenario, and prints one JSON line per scenario and a Markdown table.
See docs/benchmarks.rst for the scenarios, the targets and the last results.

Modules: :mod:`bench.run` (command line), :mod:`bench.scenarios` (what is
measured), :mod:`bench.stack` (the processes), :mod:`bench.receiver` (the
callback receiver), :mod:`bench.load` (wrk and the paced sender),
:mod:`bench.baseline` (the plain Celery app), :mod:`bench.report` (figures,
targets, output), :mod:`bench.floor` (the minimal Flask create the intake
scenario compares httpqueue with), :mod:`bench.sweep` (granian worker and
thread counts), :mod:`bench.profile` (py-spy on the API under load).

The scale curve is its own command, ``python -m bench.scale`` (10^4 to 10^7
pending tasks, standalone or cluster, and workers x API nodes): modules
:mod:`bench.scale` (command line), :mod:`bench.backlog` (filling, rates),
:mod:`bench.memory` (bytes per task by kind of key), :mod:`bench.stores`
(the Redis it fills), :mod:`bench.nodes` (workers and API nodes),
:mod:`bench.plots` (the PNGs in docs/), :mod:`bench.layouts` (what other task
layouts would cost in Redis).
"""
