"""OneStory benchmarks (scripts, not tests): each backs a table of docs/performance.md.
Entry point: `python -m onestory_lab bench --out DIR` (runs them all, see `run`)."""
