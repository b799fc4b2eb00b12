"""The benchmark behind ``make bench`` (``python -m bench.run``); see BENCHMARKS.md.

Nothing here is imported by the service: it drives the project from outside
(``flask`` subprocesses, gunicorn, wrk) and from the engine's own functions.
"""
