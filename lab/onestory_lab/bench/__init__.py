"""OneStory benchmarks (scripts, not tests). Entry point: `python -m onestory_lab bench --out DIR`
or `python -m bench.run --out DIR` from the repository root. See docs/performance.md."""
