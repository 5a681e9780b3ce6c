"""Multi-shot evaluation of real videos: the benchmark stories, `onestory evaluate` (Table 1
layout), and `onestory bench-stories` (queue every story on ComfyUI servers). The metric
functions live in the core (`onestory.metrics`) so the ComfyUI node shares them."""
