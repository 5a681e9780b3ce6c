"""Real-video data pipeline: shots -> captions -> filters and selector pseudo-labels -> three-shot
samples (shot inflation) -> a sharded cache of Wan VAE latents and umT5 text features.

Commands: `python -m onestory_lab data {shots,build,inspect}` (docs/training-wan.md, "Data").
Heavy dependencies (PyAV, TransNetV2, PySceneDetect, transformers, sentencepiece) come with the
`[data]` extra and are imported only where used (`deps.py`).
"""
