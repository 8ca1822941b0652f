"""Issue 11, memory before validation: a file is checked before any buffer its header asks for is allocated.

Each case runs in a fresh subprocess and compares its peak resident memory (ru_maxrss) after the imports with the
peak after the refused load: the bound is far below what building the asked-for thing would cost.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def peak_growth_mb(setup: str, action: str) -> tuple[float, str]:
    """Run `setup`, then `action` in a fresh interpreter; -> (peak RSS growth during the action in MB, its output)."""
    code = textwrap.dedent(f"""
        import resource, sys
        {setup}
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            {action}
            print("RESULT accepted")
        except Exception as exc:
            print("RESULT", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print("GROWTH_KB", after - before)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    growth = int(next(line for line in lines if line.startswith("GROWTH_KB")).split()[1]) / 1024
    return growth, next(line for line in lines if line.startswith("RESULT"))


def test_a_checkpoint_asking_for_a_huge_model_is_refused_before_it_is_built(tmp_path):
    """A 2 KB file whose config says image_size 5800 with no weights cost 1 GB before it was refused."""
    path = tmp_path / "huge.pt"
    config = {"image_size": 5800, "channels": [32, 64, 128], "kernel_sizes": [3, 3, 3], "pool_sizes": [2, 2, 2]}
    torch.save({"format": "swwae", "format_version": 1, "model_config": config, "model_state": {}}, path)
    assert path.stat().st_size < 4096
    growth, result = peak_growth_mb("from core.model import load_checkpoint",
                                    f"load_checkpoint({str(path)!r})")
    assert result.startswith("RESULT CheckpointError") and "image_size 5800" in result
    assert growth < 100, f"refusing the file grew the peak memory by {growth:.0f} MB"


def test_a_checkpoint_without_the_weights_of_its_architecture_is_refused_before_it_is_built(tmp_path):
    path = tmp_path / "empty.pt"
    config = {"image_size": 256, "channels": [64, 128], "kernel_sizes": [3, 3], "pool_sizes": [2, 2]}  # 67M weights
    torch.save({"format": "swwae", "format_version": 1, "model_config": config, "model_state": {}}, path)
    growth, result = peak_growth_mb("from core.model import load_checkpoint",
                                    f"load_checkpoint({str(path)!r})")
    assert result.startswith("RESULT CheckpointError") and "missing" in result
    assert growth < 100, f"refusing the file grew the peak memory by {growth:.0f} MB"


@pytest.mark.parametrize("channels, match", [([10**5, 10**5], "parameters, over")])
def test_a_checkpoint_over_the_parameter_cap_is_refused_without_allocating(tmp_path, channels, match):
    path = tmp_path / "wide.pt"
    config = {"image_size": 28, "channels": channels, "kernel_sizes": [3, 3], "pool_sizes": [2, 2]}
    torch.save({"format": "swwae", "format_version": 1, "model_config": config, "model_state": {}}, path)
    growth, result = peak_growth_mb("from core.model import load_checkpoint", f"load_checkpoint({str(path)!r})")
    assert result.startswith("RESULT CheckpointError") and match in result
    assert growth < 100


def png_of(width: int, height: int, mode: str = "L") -> bytes:
    """A tiny file (all-black, so it compresses to a few KB) whose header says width x height."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("width, height, channels, limit_mb, match", [
    (2_000_000, 10, 1, 100, "longer than 50 times"),  # raised an uncaught MemoryError (a 2e6 x 2e6 square)
    (20_000, 1_000, 3, 700, None),  # 20 megapixels at an aspect of 20: cost 7.3 GB for a 3-channel model
])
def test_an_uploaded_strip_is_refused_or_converted_without_a_square_buffer(tmp_path, width, height, channels,
                                                                           limit_mb, match):
    path = tmp_path / "strip.png"
    path.write_bytes(png_of(width, height))
    growth, result = peak_growth_mb(
        "from core.data import decode_image",
        f"image = decode_image(open({str(path)!r}, 'rb').read(), channels={channels}, size=28); "
        f"assert tuple(image.shape) == ({channels}, 28, 28)")
    if match:
        assert result.startswith("RESULT ImageDecodeError") and match in result
    else:
        assert result == "RESULT accepted"
    assert growth < limit_mb, f"the upload grew the peak memory by {growth:.0f} MB"


def test_a_training_folder_with_a_decompression_bomb_is_refused_in_one_line(tmp_path):
    from PIL import Image

    folder = tmp_path / "digits"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (28, 28), color=40 * i).save(folder / label / f"{i}.png")
    (folder / "b" / "bomb.png").write_bytes(png_of(30_000, 30_000, "1"))  # 900 megapixels in ~100 KB
    done = subprocess.run(
        [sys.executable, "-m", "core.train", "--dataset", f"folder:{folder}", "--epochs", "1", "--batch-size", "4",
         "--channels", "4", "8", "--kernel-sizes", "3", "3", "--pool-sizes", "2", "2", "--device", "cpu",
         "--run-dir", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "bomb.png" in done.stderr and "too large" in done.stderr


def test_a_huge_one_line_metrics_file_is_skipped_in_bounded_memory_and_never_read_again(tmp_path):
    """Issue 18 item 6: a 200 MB one-line metrics.jsonl cost the Runs page 11.5 s and 3 GB, re-read on every tick
    when it had no newline. Here 60 MB, no newline: read once in pieces, then only what is appended."""
    (tmp_path / "metrics.jsonl").write_bytes(b'{"kind": "step", "step": 1, "total": 0.5}\n' + b"x" * 60_000_000)
    setup = f"from core.runs import MetricsReader; reader = MetricsReader({str(tmp_path)!r})"
    action = ("assert reader.update() == 1 and reader.oversized == 1; "
              "assert reader.offset == reader.path.stat().st_size; "
              "assert reader.update() == 0; "
              "open(reader.path, 'ab').write(b'tail\\n{\"kind\": \"step\", \"step\": 2, \"total\": 0.25}\\n'); "
              "assert reader.update() == 1 and reader.series('step', 'total')[1].tolist() == [0.5, 0.25]; "
              "assert reader.malformed == 1")
    growth, result = peak_growth_mb(setup, action)
    assert result == "RESULT accepted"
    assert growth < 40, f"{growth:.0f} MB for a 60 MB line"  # read in 8 MB pieces, never held whole


def test_a_20_megapixel_rgba_png_is_decoded_small(tmp_path):
    """Issue 18 item 5: a legal 20 MP RGBA PNG of under 100 KB cost 840 MB and 3.7 s per decode."""
    import numpy as np
    from PIL import Image

    pixels = np.zeros((4000, 5000, 4), dtype=np.uint8)
    pixels[1000:3000, 2000:2500, 3] = 255  # a black "1" on a transparent background
    Image.fromarray(pixels, "RGBA").save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size < 200_000
    growth, result = peak_growth_mb("from core.data import decode_digit, read_pixels",
                                    f"data = open({str(tmp_path / 'big.png')!r}, 'rb').read(); "
                                    "assert max(read_pixels(data).shape) <= 1024; "
                                    "assert decode_digit(data).max() > 0.9")
    assert result == "RESULT accepted"
    assert growth < 300, f"{growth:.0f} MB to decode a 20 MP PNG"


def many_page_tiff(pages: int) -> bytes:
    """A little-endian TIFF of `pages` 1x1 8-bit grey pages, written directly (PIL's writer takes minutes for this):
    each page an IFD of 8 tags and its one pixel, chained by next-IFD offsets."""
    import struct

    entry = struct.Struct("<HHII")  # tag, type (3 SHORT, 4 LONG), count, value
    ifd_size = 2 + 8 * entry.size + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(pages):
        start = len(out)
        pixel = start + ifd_size
        tags = [(256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, pixel),
                (278, 4, 1, 1), (279, 4, 1, 1)]
        out += struct.pack("<H", len(tags)) + b"".join(entry.pack(*tag) for tag in tags)
        out += struct.pack("<I", pixel + 1 if page + 1 < pages else 0) + bytes([page % 256])
    return bytes(out)


def test_a_multi_page_tiff_is_refused_from_its_header_quickly():
    """Issue 18 item 4: an 8 MB TIFF of 80,000 one-pixel pages took 50 s to refuse (every page was counted)."""
    import time

    from core.data import ImageDecodeError, read_pixels

    data = many_page_tiff(80_000)
    assert len(data) < 9_000_000
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="multi-page"):
        read_pixels(data)
    assert time.perf_counter() - started < 1.0  # counting the pages takes tens of seconds
