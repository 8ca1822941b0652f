"""Issue 23 items 3, 5 and 6: data that is legal but senseless, refused in one line where it is read.

- Item 3: an image folder with symlink loops listed 20 images as 420 samples (copies in train and val), and two
  loops never finished. Each file is listed once, links back into the tree are not followed, the walk is bounded.
- Item 5: IDX headers with zero-sized dimensions or sides no model takes passed the reader and failed later
  (RuntimeError on every page, a traceback from the CLI).
- Item 6: 0.44 MB of gzip declaring 2 x 15000 x 15000 images cost 1.5 GB when the examples loaded. Sides and the
  inflated size are bounded from the header, before a byte of the body is inflated, and the body is read in chunks.
"""
import gzip
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import core.data.idx as idx_module
from core.data import DataConfig, DatasetUnavailable, IdxError, load_split, read_idx
from core.data.sources import folder_dataset
from core.runs.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--device", "cpu"]


@pytest.fixture(autouse=True)
def no_system_dirs(monkeypatch):
    """Look only where the test puts files (this machine may have Debian's package installed)."""
    monkeypatch.setattr(idx_module, "SYSTEM_DIRS", {})


def idx_header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


def write_pair(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Both official splits of an MNIST-like dataset in `folder`, holding the same `images` and `labels`."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(idx_header(images.shape) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_header(labels.shape) + labels.tobytes())
    return folder


def zeros_gzip(path: Path, dims: tuple[int, ...], body_bytes: int, *, piece: int = 2**22) -> Path:
    """A gzip of an IDX header declaring `dims` and `body_bytes` zero bytes, written as members of `piece` zeros
    (one member compressed once, repeated), so 450 MB of body takes a few hundred KB and a few ms to write."""
    full, rest = divmod(body_bytes, piece)
    member = gzip.compress(bytes(piece))
    with open(path, "wb") as out:
        out.write(gzip.compress(idx_header(dims)))
        for _ in range(full):
            out.write(member)
        if rest:
            out.write(gzip.compress(bytes(rest)))
    return path


# ---- item 3: an image folder with symlink loops ------------------------------------------------------------------

def image_folder(root: Path, per_class: int = 10) -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("L", (8, 8), color=20 * i).save(root / name / f"{i}.png")
    return root


def real_paths(folder, rows: torch.Tensor) -> list[str]:
    return [os.path.realpath(folder.samples[i][0]) for i in rows.tolist()]


def test_a_symlink_loop_lists_each_image_once_and_in_one_split(tmp_path):
    """Before the fix: 420 samples from 20 files, 10 of them in both train and val."""
    root = image_folder(tmp_path / "pics")
    os.symlink(".", root / "a" / "loop")  # a/loop -> a
    os.symlink("../a/0.png", root / "b" / "alias.png")  # the same file under another class
    os.link(root / "a" / "1.png", root / "b" / "hard.png")  # ... and a hard link to another
    folder, train_rows, val_rows = folder_dataset(str(root), val_fraction=0.1, seed=0)
    listed = real_paths(folder, torch.arange(len(folder)))
    assert len(folder) == 20 and len(set(listed)) == 20
    train, val = set(real_paths(folder, train_rows)), set(real_paths(folder, val_rows))
    assert not train & val and len(train | val) == 20


def test_links_out_of_the_tree_are_followed_and_a_loop_out_there_ends(tmp_path):
    """A class folder that links elsewhere is still read (as torchvision's ImageFolder reads it), once."""
    root = image_folder(tmp_path / "pics")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for i in range(3):
        Image.new("L", (8, 8)).save(outside / f"{i}.png")
    os.symlink(outside, outside / "again")  # a loop outside the tree
    os.symlink(outside, root / "c")  # class c lives outside the tree
    folder, _, _ = folder_dataset(str(root), val_fraction=0.1, seed=0)
    assert len(folder) == 23 and folder.targets.count(2) == 3


def test_two_symlink_loops_finish_loading(tmp_path):
    """Before the fix: never finished (os.walk followed both links at every level, 2^40 folders)."""
    root = image_folder(tmp_path / "pics")
    os.symlink(".", root / "a" / "one")
    os.symlink("..", root / "a" / "two")
    code = f"from core.data.sources import folder_dataset; print(len(folder_dataset({str(root)!r}, " \
           f"val_fraction=0.1, seed=0)[0]))"
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("listing a folder with two symlink loops did not finish in 30 s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["20"]


@pytest.mark.parametrize("limit, value, expected", [("MAX_FOLDER_ENTRIES", 12, "more than 12 files and folders"),
                                                    ("MAX_WALK_SECONDS", 0.0, "took more than")])
def test_a_walk_past_its_bounds_is_refused_in_one_line_also_on_the_command_line(tmp_path, monkeypatch, capsys,
                                                                                 limit, value, expected):
    import core.data.folders as folders_module

    root = image_folder(tmp_path / "pics")
    monkeypatch.setattr(folders_module, limit, value)
    with pytest.raises(DatasetUnavailable) as caught:
        folder_dataset(str(root), val_fraction=0.1, seed=0)
    message = str(caught.value)
    assert expected in message and str(root) in message and "\n" not in message
    code = main(["--dataset", f"folder:{root}", "--dry-run", "--quiet", "--run-dir", str(tmp_path / "run"),
                 *TINY_MODEL])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: image folder") and expected in err and err.count("\n") == 1


# ---- item 5: legal but senseless IDX headers ---------------------------------------------------------------------

SENSELESS = {
    "zero sides": (np.zeros((100, 0, 0), np.uint8), np.arange(100, dtype=np.uint8) % 10, "zero-sized"),
    "zero images": (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8), "zero-sized"),
    "a zero side": (np.zeros((10, 28, 0), np.uint8), np.arange(10, dtype=np.uint8), "zero-sized"),
    "sides no model takes": (np.zeros((1, 1025, 3), np.uint8), np.zeros(1, np.uint8), "at most 1024"),
}


@pytest.mark.parametrize("case", list(SENSELESS))
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_senseless_idx_images_are_refused_at_read_time_in_one_line(tmp_path, case, split):
    """Before the fix: zero sides gave a RuntimeError from the resize, zero images an empty split, 1025-pixel sides
    were read."""
    images, labels, expected = SENSELESS[case]
    folder = write_pair(tmp_path, images, labels)
    with pytest.raises(IdxError) as caught:
        load_split(DataConfig(dataset="fashion-mnist", data_dir=str(folder), download=False), split, channels=1,
                   image_size=28)
    message = str(caught.value)
    assert expected in message and "images-idx3-ubyte" in message and "\n" not in message


def test_a_senseless_idx_dataset_is_one_line_on_the_command_line(tmp_path, capsys):
    """Before the fix: a RuntimeError traceback out of main()."""
    folder = write_pair(tmp_path / "data", *SENSELESS["zero sides"][:2])
    code = main(["--dataset", "fashion-mnist", "--data-dir", str(folder), "--no-download", "--dry-run", "--quiet",
                 "--run-dir", str(tmp_path / "run"), *TINY_MODEL])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "zero-sized" in err and err.count("\n") == 1


def test_sensible_edge_cases_still_load(tmp_path):
    """What held in round 4 keeps holding: labels of 255, one image, 28 x 5 and 1 x 1 images."""
    for name, images in {"strip": np.full((3, 28, 5), 7, np.uint8), "dot": np.full((1, 1, 1), 9, np.uint8)}.items():
        labels = np.full(len(images), 255, np.uint8)
        folder = write_pair(tmp_path / name, images, labels)
        test_images, test_labels = load_split(DataConfig(dataset="mnist", data_dir=str(folder), download=False),
                                              "test")
        assert test_images.shape == (len(images), 1, *images.shape[1:]) and test_labels.tolist() == [255] * len(images)


# ---- item 6: a small file asking for gigabytes -------------------------------------------------------------------

def test_a_small_gzip_declaring_huge_images_is_refused_before_inflating(tmp_path):
    """0.44 MB of gzip holding 2 x 15000 x 15000 zero pixels. Before the fix: accepted, loading the examples' split
    (as the explorer does) grew the peak resident memory by 1.5 GB in 5.6 s."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    for prefix in ("train", "t10k"):
        zeros_gzip(folder / f"{prefix}-images-idx3-ubyte.gz", (2, 15000, 15000), 2 * 15000 * 15000)
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_header((2,)) + bytes(2)))
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 1_000_000
    code = textwrap.dedent(f"""
        import resource
        import core.data.idx as idx_module
        idx_module.SYSTEM_DIRS = {{}}
        from core.data import DataConfig, load_split
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_split(DataConfig(dataset="mnist", data_dir={str(folder)!r}, download=False, max_val=1000), "val",
                       channels=1, image_size=28)
            print("RESULT accepted")
        except ValueError as exc:
            print("RESULT", type(exc).__name__, str(exc).replace(chr(10), " NEWLINE "))
        print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    growth = float(next(line for line in done.stdout.splitlines() if line.startswith("GROWTH_MB")).split()[1])
    assert result.startswith("RESULT IdxError") and "15000x15000" in result and "NEWLINE" not in result, result
    assert "train-images-idx3-ubyte.gz" in result
    assert growth < 50, f"refusing the file grew the peak memory by {growth:.0f} MB"


def test_a_large_body_from_a_far_smaller_gzip_is_refused_before_inflating(tmp_path):
    """0.5 MB of gzip holding 500 x 1000 x 1000 zero pixels (sides a model may take, 1000:1): blank images or a bomb.
    Before the fix: inflated to 500 MB."""
    path = zeros_gzip(tmp_path / "blank.gz", (500, 1000, 1000), 500 * 1000 * 1000)
    tracemalloc.start()
    try:
        with pytest.raises(IdxError) as caught:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "decompression bomb" in message and str(path) in message and "\n" not in message
    assert peak < 20 * 2**20, f"refusing it allocated {peak / 2**20:.0f} MB"


def test_a_header_promising_more_than_its_gzip_can_hold_is_refused_before_allocating(tmp_path):
    """500 x 1000 x 1000 values (allowed sides, 500 MB) from 1 KB of gzip: deflate inflates at most ~1032 times, so
    the file is truncated and is refused from its header. Before the fix: a 500 MB buffer was asked for first."""
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(idx_header((500, 1000, 1000)) + bytes(1000)))
    tracemalloc.start()
    try:
        with pytest.raises(IdxError) as caught:
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "truncated" in message and str(path) in message and "\n" not in message
    assert peak < 20 * 2**20, f"refusing it allocated {peak / 2**20:.0f} MB"


def test_the_decompressed_length_is_checked_as_it_streams(tmp_path):
    """Reading stops at the first byte past the header's count (100 MB of zeros behind a 784-byte header), and a
    body shorter than promised (3 MB of noise where 8 MB were declared, a size its gzip could hold) is refused, both
    in bounded memory."""
    too_long = zeros_gzip(tmp_path / "long.gz", (1, 28, 28), 100 * 2**20)
    noise = np.random.default_rng(0).integers(0, 256, 3 * 10**6, dtype=np.uint8).tobytes()
    too_short = tmp_path / "short.gz"
    too_short.write_bytes(gzip.compress(idx_header((8, 1000, 1000)) + noise, compresslevel=1))
    for path, expected in ((too_long, "more bytes"), (too_short, "truncated")):
        tracemalloc.start()
        try:
            with pytest.raises(IdxError, match=expected):
                read_idx(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20 * 2**20, f"checking {path.name} held {peak / 2**20:.0f} MB"
