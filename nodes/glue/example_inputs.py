"""The example workflows' input images, copied into ComfyUI's input folder at load time.

Load Image reads only from ComfyUI's input folder, so the images the examples name
(example_workflows/input/*.png, drawn by example_workflows/tools/build.py) are copied there
when the pack loads. A file that already exists is never overwritten: a user's own image under
the same name wins.
"""
from __future__ import annotations

import logging
import os
import shutil

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "example_workflows", "input")


def install(input_dir: str, source: str = SOURCE) -> list[str]:
    """Copy every example image missing from `input_dir`; returns the names copied.

    Never raises for a folder it cannot write (a read-only install): it logs a warning naming
    the files to upload by hand, and the pack still loads.
    """
    if not os.path.isdir(source):
        return []
    copied = []
    for name in sorted(os.listdir(source)):
        target = os.path.join(input_dir, name)
        if not name.lower().endswith(".png") or os.path.exists(target):
            continue
        try:
            os.makedirs(input_dir, exist_ok=True)
            shutil.copyfile(os.path.join(source, name), target)
            copied.append(name)
        except OSError as e:
            logging.warning("OneStory: could not copy the example image %s into %s (%s); upload it with "
                            "Load Image to run the example workflows.", name, input_dir, e)
    return copied
