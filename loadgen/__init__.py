"""Load generation for the gateway: schedule requests, send them, scrape numbers, report and plot.

Tooling, not part of the serving gateway (which never imports it, see tests/test_imports.py). Used by
``gateway compare`` (imported lazily by ``gateway/cli.py``), the data-plane benchmark
(``scripts/bench_dataplane.py``) and the load test (``scripts/load_test.py``):

- ``targets``: what is loaded (``MODEL:VERSION``, the protocol's path) and the one-line error;
- ``bodies``: request bodies, encoded with the gateway's own REST JSON and tensor helpers;
- ``send``: one request, timed from when it was due, and what it measured;
- ``schedule``: open loops (interleaved, or bounded by outstanding requests) and closed loops;
- ``scrape``: the gateway's ``/metrics`` histograms and the processes' memory and CPU from ``/proc``;
- ``report``: summaries, percentiles, rich and Markdown tables; ``plot``: the latency chart;
- ``compare``, ``bench``, ``loadtest``: the three tools built from those parts.

The progress bar, table and chart need the ``compare`` extra (rich, matplotlib), imported lazily.
"""
