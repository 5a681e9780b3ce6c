"""MemoryBank, the story file and safe_relative_path."""
from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

from onestory.errors import FileFormatError, OneStoryError, ShapeError
from onestory.memory import MANIFEST_KEY, FrameRecord, MemoryBank, ShotRecord
from onestory.paths import safe_relative_path

C, H, W = 4, 3, 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lat(t: int = 3, offset: float = 0.0, c: int = C, h: int = H, w: int = W, batch: bool = True):
    """Deterministic (RNG-free, so identical in every process) latent "1 c t h w"."""
    x = (torch.arange(c * t * h * w, dtype=torch.float32).reshape(c, t, h, w) * 0.37 + offset).sin()
    return x[None] if batch else x


def three_shots(dtype=torch.float32) -> MemoryBank:
    b = MemoryBank.empty(dtype)
    b = b.add_shot(lat(3, 0.0), "a woman in a red coat", seed=1, selection=None)
    b = b.add_shot(lat(2, 1.0), "a café", source="reference", seed=2,
                   selection={"kept": [2, 0], "scores": [0.5, -1.25, 3.0], "scorer": "recency"})
    return b.add_shot(lat(4, 2.0), "the same woman, in the rain", seed=3)


def snap(bank: MemoryBank):
    return bank.frames.clone(), bank.records, bank.shots


def assert_unchanged(bank: MemoryBank, s) -> None:
    frames, records, shots = s
    assert bank.frames.dtype == frames.dtype and torch.equal(bank.frames, frames)
    assert bank.records == records and bank.shots == shots


# ------------------------------------------------------------------ construction & layout


def test_add_shot_layouts_and_records():
    b = MemoryBank.empty()
    assert len(b) == 0 and b.channels is None and b.num_shots == 0
    x = lat(3)
    b1 = b.add_shot(x, "one")
    b2 = b1.add_shot(lat(2, 1.0, batch=False), "two", source="user")   # "c t h w" also accepted
    assert b2.frames.shape == (5, C, H, W) and (b2.channels, b2.height, b2.width) == (C, H, W)
    assert torch.equal(b2.frames[:3], x[0].permute(1, 0, 2, 3))
    assert [(r.shot, r.frame, r.source) for r in b2.records] == [
        (0, 0, "generated"), (0, 1, "generated"), (0, 2, "generated"), (1, 0, "user"), (1, 1, "user")]
    assert [s.caption for s in b2.shots] == ["one", "two"]
    assert torch.equal(b2.frame_times(), torch.arange(5, dtype=torch.float32))
    assert "2 shots" in repr(b2) and "5 frames" in repr(b2)


def test_add_shot_never_aliases_caller_tensor():
    x = lat(3)
    x1 = lat(1)  # t == 1: "c t h w -> t c h w" is already contiguous, so a lazy .to() would alias
    b = MemoryBank.empty().add_shot(x, "a").add_shot(x1, "b")
    before = b.frames.clone()
    x.add_(100.0)
    x1.add_(100.0)
    assert torch.equal(b.frames, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_storage_dtype_casts_incoming(dtype):
    x = lat(2)
    b = MemoryBank.empty(dtype).add_shot(x, "a")
    assert b.frames.dtype == dtype
    assert torch.equal(b.frames, x[0].permute(1, 0, 2, 3).to(dtype))
    assert x.dtype == torch.float32  # caller's tensor untouched


def test_dtype_names_accepted_and_bad_dtype_refused():
    assert MemoryBank.empty("bf16").dtype == torch.bfloat16
    with pytest.raises(OneStoryError, match="float32, float16 or bfloat16"):
        MemoryBank.empty(torch.float64)


# ------------------------------------------------------------------ immutability


def test_every_op_leaves_inputs_unchanged():
    bank = three_shots()
    s = snap(bank)
    x = lat(2, 5.0)
    x_copy = x.clone()
    frame = lat(1, 7.0)[0, :, 0]
    frame_copy = frame.clone()
    sel = {"kept": [1], "scores": [0.25]}
    outs = [
        bank.add_shot(x, "new", selection=sel),
        bank.swap_frame(4, frame),
        bank.set_pinned([0, 3]),
        bank.set_excluded(2),
        bank.drop_shot(1),
        bank.truncate(2),
        bank.truncate(3),
    ]
    sf = bank.shot_frames(1)
    sf.add_(1.0)                         # the returned copy is the caller's to change
    bank.frame_times().add_(1.0)
    bank.fingerprint()
    for out in outs:
        assert out is not bank
    assert_unchanged(bank, s)
    assert torch.equal(x, x_copy) and torch.equal(frame, frame_copy)
    assert sel == {"kept": [1], "scores": [0.25]}


def test_errors_leave_inputs_unchanged():
    bank = three_shots()
    s = snap(bank)
    bad = [
        lambda: bank.add_shot(lat(2, c=C + 1), "x"),
        lambda: bank.add_shot(lat(2, h=H + 1), "x"),
        lambda: bank.add_shot(torch.cat([lat(2), lat(2)]), "x"),
        lambda: bank.swap_frame(99, lat(1)[0, :, 0]),
        lambda: bank.set_pinned([0, 99]),     # one valid index, one bad: nothing may change
        lambda: bank.drop_shot(3),
        lambda: bank.truncate(4),
    ]
    for f in bad:
        with pytest.raises(OneStoryError):
            f()
        assert_unchanged(bank, s)
    nan = lat(2)
    nan[0, 0, 1, 0, 0] = float("nan")
    nan_bytes = nan.clone()
    with pytest.raises(OneStoryError):
        bank.add_shot(nan, "x")
    assert_unchanged(bank, s)
    assert torch.equal(nan.view(torch.int32), nan_bytes.view(torch.int32))   # NaN-safe compare


def test_bank_attributes_and_selection_are_read_only():
    sel = {"kept": [1, 2], "nested": {"a": [1]}}
    bank = MemoryBank.empty().add_shot(lat(1), "a", selection=sel)
    with pytest.raises(AttributeError):
        bank.frames = torch.zeros(1)            # type: ignore[misc]
    with pytest.raises(TypeError):
        bank.shots[0].selection["kept"] = []    # type: ignore[index]
    sel["kept"].append(3)                        # the caller's dict is not shared
    sel["nested"]["a"].append(2)
    assert bank.shots[0].selection_dict() == {"kept": [1, 2], "nested": {"a": [1]}}
    assert bank.shots[0].selection["kept"] == (1, 2)


def test_selection_must_be_json_without_nan():
    with pytest.raises(OneStoryError, match="JSON"):
        MemoryBank.empty().add_shot(lat(1), "a", selection={"scores": [float("nan")]})
    with pytest.raises(OneStoryError, match="JSON"):
        MemoryBank.empty().add_shot(lat(1), "a", selection={"t": torch.zeros(1)})


def test_pickle_and_deepcopy_roundtrip():
    bank = three_shots().set_pinned(1)
    for other in (pickle.loads(pickle.dumps(bank)), copy.deepcopy(bank)):
        assert other.fingerprint() == bank.fingerprint()
        assert other.records == bank.records and other.shots == bank.shots


# ------------------------------------------------------------------ validation messages


def test_batch_gt_one_refused_with_fix():
    with pytest.raises(ShapeError, match=r"batch size 2.*pick one with a batch node"):
        MemoryBank.empty().add_shot(torch.cat([lat(2), lat(2)]), "x")


def test_channel_and_spatial_mismatch_name_both_values():
    bank = MemoryBank.empty().add_shot(lat(2), "a")
    with pytest.raises(ShapeError) as e:
        bank.add_shot(lat(2, c=16), "b")
    msg = str(e.value)
    assert "16 channels" in msg and f"has {C}" in msg and "VAE/model" in msg
    with pytest.raises(ShapeError) as e:
        bank.add_shot(lat(2, h=6, w=10), "b")
    msg = str(e.value)
    assert "height 6 and width 10" in msg and f"height {H} and width {W}" in msg and "resolution" in msg
    with pytest.raises(ShapeError, match=f"{C + 2} channels"):
        bank.swap_frame(0, lat(1, c=C + 2)[0, :, 0])


def test_nan_inf_rank_and_dtype_refused():
    x = lat(2)
    x[0, 1, 0, 0, 0] = float("inf")
    with pytest.raises(OneStoryError, match="inf"):
        MemoryBank.empty().add_shot(x, "a")
    x = lat(2)
    x[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(OneStoryError, match="NaN"):
        MemoryBank.empty().add_shot(x, "a")
    with pytest.raises(OneStoryError, match="exceed"):
        MemoryBank.empty(torch.float16).add_shot(lat(1) * 1e6, "a")
    with pytest.raises(ShapeError, match=r"\(4, 3, 5\)"):
        MemoryBank.empty().add_shot(torch.zeros(C, H, W), "a")
    with pytest.raises(OneStoryError, match="floating point"):
        MemoryBank.empty().add_shot(torch.zeros(1, C, 2, H, W, dtype=torch.int64), "a")
    with pytest.raises(OneStoryError, match="torch.Tensor"):
        MemoryBank.empty().add_shot({"samples": lat(1)}, "a")  # type: ignore[arg-type]
    with pytest.raises(OneStoryError):
        MemoryBank(torch.full((1, C, H, W), float("nan")), [FrameRecord(0, 0, "user")],
                   [ShotRecord("a", "user")])


def test_constructor_validates_structure_and_copies():
    frames = lat(2)[0].permute(1, 0, 2, 3).contiguous()
    recs = [FrameRecord(0, 0, "user"), FrameRecord(0, 1, "user")]
    b = MemoryBank(frames, recs, [ShotRecord("a", "user")])
    frames.add_(1.0)
    assert not torch.equal(b.frames, frames)
    with pytest.raises(OneStoryError, match="shot-major"):
        MemoryBank(frames, [FrameRecord(0, 1, "user"), FrameRecord(0, 0, "user")],
                   [ShotRecord("a", "user")])
    with pytest.raises(OneStoryError, match="2 shot records"):
        MemoryBank(frames, recs, [ShotRecord("a", "user"), ShotRecord("b", "user")])


# ------------------------------------------------------------------ edits


def test_swap_frame():
    bank = three_shots().set_pinned(4)
    new = torch.full((C, H, W), 0.5)
    out = bank.swap_frame(4, new)
    assert torch.equal(out.frames[4], new)
    assert torch.equal(out.frames[:4], bank.frames[:4]) and torch.equal(out.frames[5:], bank.frames[5:])
    assert out.records[4] == FrameRecord(1, 1, "user", pinned=True)
    assert out.swap_frame(0, new[None, :, None]).records[0].source == "user"   # "1 c 1 h w"
    with pytest.raises(ShapeError, match="c h w"):
        bank.swap_frame(0, new[None])


def test_pin_exclude_flags_and_ranges():
    bank = three_shots()
    p = bank.set_pinned([0, 5])
    assert p.pinned == (True, False, False, False, False, True) + (False,) * 3
    assert p.frames is bank.frames            # flag edits share the (read-only) tensor
    e = p.set_excluded(0)                     # excluding a pinned frame unpins it
    assert e.records[0].excluded and not e.records[0].pinned
    assert e.set_pinned(0).records[0] == FrameRecord(0, 0, "generated", pinned=True)
    assert p.set_pinned(5, False).pinned[5] is False
    with pytest.raises(OneStoryError, match=r"frame index 9 is out of range.*9 frames"):
        bank.set_pinned(9)
    with pytest.raises(OneStoryError, match="out of range"):
        bank.set_excluded([-1])
    with pytest.raises(OneStoryError, match="empty"):
        MemoryBank.empty().set_pinned(0)


def test_drop_shot_renumbers_later_shots():
    bank = three_shots().set_pinned(6)        # shot 2, frame 1
    out = bank.drop_shot(1)
    assert out.num_shots == 2 and out.num_frames == 7
    assert [s.caption for s in out.shots] == ["a woman in a red coat", "the same woman, in the rain"]
    assert [(r.shot, r.frame) for r in out.records] == [(0, 0), (0, 1), (0, 2)] + [(1, i) for i in range(4)]
    assert out.records[4].pinned                       # flag travelled with its frame
    assert torch.equal(out.shot_frames(1), bank.shot_frames(2))
    assert torch.equal(out.shot_frames(0), bank.shot_frames(0))
    assert bank.drop_shot(0).drop_shot(0).drop_shot(0).num_frames == 0
    with pytest.raises(OneStoryError, match=r"shot 3 is out of range.*3 shots"):
        bank.drop_shot(3)


def test_truncate():
    bank = three_shots()
    one = bank.truncate(1)
    assert one.num_shots == 1 and one.num_frames == 3
    assert torch.equal(one.frames, bank.frames[:3]) and one.shots == bank.shots[:1]
    empty = bank.truncate(0)
    assert len(empty) == 0 and empty.dtype == bank.dtype
    assert empty.fingerprint() == MemoryBank.empty().fingerprint()
    with pytest.raises(OneStoryError, match="between 0 and 3"):
        bank.truncate(4)


def test_shot_frames_layout():
    bank = three_shots()
    assert torch.equal(bank.shot_frames(1), lat(2, 1.0)[0])
    assert bank.shot_frames(2).shape == (C, 4, H, W)


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_equal_for_equal_content_and_cached():
    a, b = three_shots(), three_shots()
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64 and int(a.fingerprint(), 16) >= 0
    assert a.fingerprint() is a.fingerprint()


def test_fingerprint_changes_on_every_kind_of_edit():
    base = three_shots()
    other_caption = (MemoryBank.empty().add_shot(lat(3, 0.0), "a woman in a BLUE coat", seed=1)
                     .add_shot(lat(2, 1.0), "a café", source="reference", seed=2,
                               selection={"kept": [2, 0], "scores": [0.5, -1.25, 3.0],
                                          "scorer": "recency"})
                     .add_shot(lat(4, 2.0), "the same woman, in the rain", seed=3))
    variants = {
        "swap": base.swap_frame(0, base.frames[0].clone() + 1e-3),
        "bytes only": base.swap_frame(0, base.frames[0].clone() + 1e-3, source="generated"),
        "pin": base.set_pinned(0),
        "exclude": base.set_excluded(0),
        "caption": other_caption,
        "drop": base.drop_shot(2),
        "dtype": three_shots(torch.bfloat16),
        "seed": base.truncate(2).add_shot(lat(4, 2.0), "the same woman, in the rain", seed=4),
    }
    prints = {k: v.fingerprint() for k, v in variants.items()}
    assert base.fingerprint() not in prints.values()
    assert len(set(prints.values())) == len(prints)
    # A swap that restores the same bytes and source restores the fingerprint.
    back = variants["swap"].swap_frame(0, base.frames[0], source="generated")
    assert back.fingerprint() == base.fingerprint()


def test_fingerprint_stable_across_processes():
    code = ("import test_memory as t, torch;"
            "print(t.three_shots(torch.bfloat16).set_pinned(2).fingerprint())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.path.join(ROOT, "tests")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == three_shots(torch.bfloat16).set_pinned(2).fingerprint()


# ------------------------------------------------------------------ story file


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_save_load_bit_exact(tmp_path, dtype):
    bank = three_shots(dtype).set_pinned(1).set_excluded(7).swap_frame(3, torch.randn(C, H, W))
    path = tmp_path / "story.safetensors"
    bank.save(path)
    back = MemoryBank.load(path)
    assert back.frames.dtype == dtype and torch.equal(back.frames, bank.frames)
    assert back.records == bank.records and back.shots == bank.shots
    assert back.fingerprint() == bank.fingerprint()
    assert back.shots[1].selection_dict() == bank.shots[1].selection_dict()
    assert os.listdir(tmp_path) == ["story.safetensors"]      # no temp file left behind


def test_empty_bank_save_load(tmp_path):
    path = tmp_path / "empty.safetensors"
    MemoryBank.empty(torch.float16).save(path)
    back = MemoryBank.load(path)
    assert len(back) == 0 and back.dtype == torch.float16 and back.num_shots == 0
    assert back.add_shot(lat(1), "a").num_frames == 1


def test_save_creates_subfolders(tmp_path):
    path = tmp_path / "stories" / "mine.safetensors"
    three_shots().save(path)
    assert MemoryBank.load(path).num_shots == 3


@pytest.mark.parametrize("fail_at", ["replace", "fsync"])
def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "story.safetensors"
    old = three_shots()
    old.save(path)
    old_bytes = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="simulated"):
        old.drop_shot(0).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert os.listdir(tmp_path) == ["story.safetensors"]
    assert MemoryBank.load(path).fingerprint() == old.fingerprint()


def test_truncated_file_refused(tmp_path):
    path = tmp_path / "story.safetensors"
    three_shots().save(path)
    data = path.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 20, 4):
        path.write_bytes(data[:cut])
        with pytest.raises(FileFormatError, match="truncated"):
            MemoryBank.load(path)


def test_foreign_files_refused(tmp_path):
    foreign = tmp_path / "lora.safetensors"
    save_file({"lora_down.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(FileFormatError, match="without OneStory story metadata"):
        MemoryBank.load(foreign)
    pickled = tmp_path / "ckpt.pt"
    torch.save({"frames": torch.zeros(1)}, str(pickled))
    with pytest.raises(FileFormatError):
        MemoryBank.load(pickled)
    with pytest.raises(OneStoryError, match="does not exist"):
        MemoryBank.load(tmp_path / "missing.safetensors")


def _write_with_manifest(path, frames, manifest) -> None:
    path.write_bytes(st_save({"frames": frames}, metadata={MANIFEST_KEY: json.dumps(manifest)}))


def test_unknown_version_and_inconsistent_manifest_refused(tmp_path):
    bank = three_shots()
    path = tmp_path / "s.safetensors"
    m = bank._manifest()
    _write_with_manifest(path, bank.frames, {**m, "version": 3})
    with pytest.raises(FileFormatError, match=r"version 3.*versions 1 and 2 only"):
        MemoryBank.load(path)
    _write_with_manifest(path, bank.frames, {**m, "format": "something-else"})
    with pytest.raises(FileFormatError, match="onestory-story"):
        MemoryBank.load(path)
    _write_with_manifest(path, bank.frames[:-1].clone(), m)
    with pytest.raises(FileFormatError, match="shape"):
        MemoryBank.load(path)
    _write_with_manifest(path, bank.frames, {**m, "records": m["records"][:-1]})
    with pytest.raises(FileFormatError):
        MemoryBank.load(path)
    _write_with_manifest(path, bank.frames.half(), m)
    with pytest.raises(FileFormatError, match="dtype"):
        MemoryBank.load(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_overwritten_tensor_bytes_refused(tmp_path, dtype):
    """Same size, intact header, finite values: only the saved digest can tell."""
    bank = three_shots(dtype)
    path = tmp_path / "s.safetensors"
    bank.save(path)
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + 6] ^= 0x01                 # one low mantissa bit of one latent value
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match=r"do not match the sha256 digest.*backup or save the story again"):
        MemoryBank.load(path)
    data[header + 6] ^= 0x01                 # the same byte restored: loads again
    path.write_bytes(bytes(data))
    assert MemoryBank.load(path).fingerprint() == bank.fingerprint()


def safe_open_manifest(tmp_path, bank) -> str:
    """The manifest JSON that `save` writes for `bank`."""
    from safetensors import safe_open

    ref = tmp_path / "ref.safetensors"
    bank.save(ref)
    with safe_open(str(ref), "pt") as f:
        return f.metadata()[MANIFEST_KEY]


def test_version_1_file_loads_and_version_2_needs_digest(tmp_path):
    bank = three_shots().set_pinned(2)
    path = tmp_path / "v1.safetensors"
    v1 = {**bank._manifest(), "version": 1}      # what OneStory wrote before digests existed
    _write_with_manifest(path, bank.frames, v1)
    back = MemoryBank.load(path)
    assert torch.equal(back.frames, bank.frames) and back.records == bank.records and back.shots == bank.shots
    assert MemoryBank.load(path).add_shot(lat(1), "next").num_shots == 4
    saved = json.loads(safe_open_manifest(tmp_path, back))   # saving again: current version, with digest
    assert saved["version"] == 2 and saved["digests"]["frames"].startswith("sha256:")
    _write_with_manifest(path, bank.frames, bank._manifest())     # version 2 without digests
    with pytest.raises(FileFormatError, match="no digest for tensor 'frames'"):
        MemoryBank.load(path)


# ------------------------------------------------------------------ safe_relative_path


def test_safe_relative_path_accepts_relative_names(tmp_path):
    p = safe_relative_path(tmp_path, "stories/my_story", ".safetensors")
    assert p == (tmp_path / "stories" / "my_story.safetensors").resolve()
    assert safe_relative_path(tmp_path, "a.SAFETENSORS", ".safetensors").name == "a.SAFETENSORS"
    assert safe_relative_path(tmp_path, "sub\\x", ".json") == (tmp_path / "sub" / "x.json").resolve()


@pytest.mark.parametrize("name", ["/etc/passwd", "C:\\Windows\\x", "C:x", "\\\\server\\share\\x",
                                  "\\x", "..", "../x", "a/../../x", "a\\..\\b", "", "  ", "a/",
                                  "./", "a\x00b"])
def test_safe_relative_path_refusals(tmp_path, name):
    with pytest.raises(OneStoryError):
        safe_relative_path(tmp_path, name, ".safetensors")


def test_safe_relative_path_refuses_symlink_escape(tmp_path):
    base = tmp_path / "out"
    base.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", base / "link")
    with pytest.raises(OneStoryError, match="outside"):
        safe_relative_path(base, "link/x", ".safetensors")
