"""Synthetic story world for the proof of mechanism (pure PyTorch/numpy; never imports comfy).

render      palettes, shapes, rooms -> pixels
grammar     referential caption grammar
storyworld  six-shot stories of the paper's three patterns + ground truth + relevance labels
inflation   three-shot training samples with shot inflation
latent      exact codec pixels <-> "b c t h w" latents (16 channels, stride 4x2x2)
text        tokenizer + fixed text encoder
decode      attribute reader (frames -> room + characters) and scoring
dataset     torch Datasets; preview: contact_sheet
See docs/storyworld.md.
"""
from .dataset import EvalStoryDataset, TripletDataset, eval_stories
from .decode import FrameReading, read_frame, read_latent, read_video, score, summarize
from .inflation import Triplet, make_triplet, story_seed
from .latent import LatentCodec, frames_to_tensor, tensor_to_frames
from .preview import contact_sheet
from .render import Character, Environment, Placement
from .world import PATTERN_NAMES, FrameTruth, Shot, Story, make_story, relevance
from .text import TextEncoder, Tokenizer, encode_captions

__all__ = [
    "EvalStoryDataset", "TripletDataset", "eval_stories", "FrameReading", "read_frame",
    "read_latent", "read_video", "score", "summarize", "Triplet", "make_triplet", "story_seed",
    "LatentCodec", "frames_to_tensor", "tensor_to_frames", "contact_sheet", "Character",
    "Environment", "Placement", "PATTERN_NAMES", "FrameTruth", "Shot", "Story", "make_story",
    "relevance", "TextEncoder", "Tokenizer", "encode_captions",
]
