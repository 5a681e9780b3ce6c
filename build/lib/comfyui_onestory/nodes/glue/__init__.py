"""ComfyUI-side glue: the model hook, the sampler bridge, socket types, UI payloads and the link
to the core. Node files import from here and from `core`, never from each other."""
