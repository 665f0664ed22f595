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
"""
