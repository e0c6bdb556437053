"""The results layer, between the store and its readers: what `results.json` holds and how people read it.

- `rows`: one row per trained network (`run_row`), aggregates over replicates (`aggregate`), `results.csv`, the text
  table and its cells;
- `conclusions`: every stated conclusion (stable, matching) with its interval over the independent units;
- `pairs`: the stability measures and one row per compared pair (`pair_rows`, `stability.csv`);
- `kinds`: a [masks] run's kind as (source, ablation) (`split_kind`);
- `probes`: the rewind search's probes as table cells and answers (`probe_cells`, `answer`, `table`);
- `source`: an experiment's results as the engine computes them from the store (`compute`, `write`), for readers
  that find `results.json` missing.

It imports only the store and the spec. The engine (`experiments/*`, `training/*`) computes with it and writes
`results.json`; the readers (`loggers`, `reports`, `export`, the API's readers) read through it and never import the
engine (tests/test_imports.py). See docs/architecture.md."""
