"""Multi-shot story metrics (OneStory Table 1 and VBench's intra-shot dimensions).

Pure functions from frames + a story annotation to numbers. Frames are float "t 3 h w" in
[0, 1]; models enter through the small callable interfaces in `interfaces.py`, so the same code
scores a story in the lab (`onestory_lab.multishot.models`) and inside ComfyUI (the pack's
Eval Model Loader node and ComfyUI's CLIP_VISION); both load through `encoders.py`.

Modules (one metric family each):
  annotation  the benchmark / story annotation format (which shots share a character or place)
  regions     person crops and person-free backgrounds of a frame
  inter_shot  C-Cons, E-Cons and their average (DINOv2 cosine between annotated shot pairs)
  alignment   S-Align: shot <-> caption similarity (a video-text or an image-text model)
  intra_shot  VBench subject / background consistency, aesthetic quality, dynamic degree
  stats       mean and 95 % confidence interval over stories
  score       one story: every metric whose model is available, with the reason for the rest
  encoders    loaders of local model files; the caller passes transformers / torchvision in

Nothing here imports transformers or torchvision: the core depends on torch, einops and
safetensors only.
"""
