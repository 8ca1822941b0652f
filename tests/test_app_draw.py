"""The input picker's "Prepare like MNIST" toggle and "Draw" source, through streamlit.testing.v1.AppTest.

AppTest does not render custom components: `st_canvas` returns its default (no objects, no image) and keeps its
state in `session_state["<key>_canvas"]` as the frontend would send it ({"drawing": {"raw", "data"}, ...}). The
drawn case is tested by putting there what the browser sends after a stroke: Fabric.js objects and a PNG data URL.
tests/test_browser_draw.py draws with a real mouse.
"""
import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from streamlit.testing.v1 import AppTest

from app import sidebar
from core.model import save_checkpoint
from core.model import SWWAE, rgb32_config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app" / "main.py")
TIMEOUT = 120
PREVIEW = "What the model sees (28x28)"
WAITING = "Showing the dataset image below until"


def open_layers() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def png(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo_of_a_one() -> bytes:
    """A dark "1" on grey paper, small and off-centre on a 400x300 photo, blurred, noisy, JPEG."""
    paper = Image.new("L", (400, 300), 200)
    ImageDraw.Draw(paper).line([(310, 40), (310, 150)], fill=35, width=14)
    pixels = np.asarray(paper.filter(ImageFilter.GaussianBlur(1.0)), dtype=np.float32)
    pixels += np.random.default_rng(0).normal(0, 6, pixels.shape)
    return png(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "JPEG", quality=75)


def predicted(at: AppTest) -> str:
    readout = next(m.value for m in at.markdown if m.value.startswith("Predicted **"))
    return readout.split("**")[1]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def previews(at: AppTest) -> list[str]:
    """Captions of the model-input previews (the pages show other images too)."""
    return [caption for image in at.image for caption in image.captions if caption.startswith("What the model sees")]


def preview_url(at: AppTest) -> str:
    return next(url for image in at.image for url, caption in zip(image.value, image.captions, strict=True)
                if caption == PREVIEW)


def canvas_state(image: Image.Image | None, objects: int = 1) -> dict:
    """What the canvas component sends back: its Fabric.js JSON and, with return_image_data, a PNG data URL."""
    url = None if image is None else "data:image/png;base64," + base64.b64encode(png(image)).decode("ascii")
    return {"drawing": {"raw": {"objects": [{"type": "path"}] * objects, "background": "#000000"}, "data": url},
            "backgroundFit": None}


def drawn_one() -> Image.Image:
    """A vertical white stroke on the black 280x280 canvas, as a mouse drag draws it."""
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(canvas).line([(140, 50), (140, 230)], fill=(255, 255, 255, 255), width=20)
    return canvas


def test_upload_is_prepared_by_default_with_a_preview():
    at = open_layers()
    at.radio(key="layers_source").set_value("Upload").run()
    assert at.toggle(key="layers_prepare").value is True
    at.file_uploader(key="layers_upload").set_value(("one.jpg", photo_of_a_one(), "image/jpeg")).run()
    ok(at)
    assert previews(at) == [PREVIEW]
    assert predicted(at) == "1"
    assert not any(c.startswith(WAITING) for c in captions(at))


def test_upload_preparation_can_be_turned_off():
    at = open_layers()
    at.radio(key="layers_source").set_value("Upload").run()
    at.file_uploader(key="layers_upload").set_value(("one.jpg", photo_of_a_one(), "image/jpeg")).run()
    prepared = preview_url(at)
    at.toggle(key="layers_prepare").set_value(False).run()
    ok(at)
    assert previews(at) == [PREVIEW]  # the preview now shows the plain letterboxed conversion ...
    assert preview_url(at) != prepared  # ... another picture (media URLs are content-addressed)
    at.radio(key="layers_invert").set_value("yes").run()
    ok(at)


def test_upload_without_a_digit_gets_a_warning_and_no_prediction_of_its_own():
    """Issue 18 item 14: a blank picture used to be shown unprepared and classified ("1" at 92%)."""
    at = open_layers()
    at.radio(key="layers_source").set_value("Upload").run()
    at.file_uploader(key="layers_upload").set_value(("grey.png", png(Image.new("L", (64, 48), 128)),
                                                     "image/png")).run()
    ok(at)
    assert len(at.warning) == 1 and "no digit found" in at.warning[0].value
    assert previews(at) == []  # no model input was made of it
    assert f"{WAITING} an image is uploaded." in captions(at)  # the prediction shown is the dataset image's


def test_draw_with_nothing_drawn_falls_back_to_the_dataset():
    at = open_layers()
    at.radio(key="layers_source").set_value("Draw").run()
    ok(at)
    assert f"{WAITING} a digit is drawn." in captions(at)
    assert at.number_input(key="layers_index").value == 0  # the dataset image is what the page shows
    assert not previews(at)
    assert at.session_state["layers_canvas"]["drawing"]["data"] is None  # what AppTest's canvas holds


def test_a_drawing_is_prepared_and_classified():
    at = open_layers()
    at.radio(key="layers_source").set_value("Draw").run()
    at.session_state["layers_canvas"] = canvas_state(drawn_one())
    at.run()
    ok(at)
    assert predicted(at) == "1"
    assert previews(at) == [PREVIEW]
    assert not any(c.startswith(WAITING) for c in captions(at))
    at.session_state["layers_canvas"] = canvas_state(Image.new("RGBA", (280, 280), (0, 0, 0, 255)))  # erased
    at.run()
    ok(at)
    assert f"{WAITING} a digit is drawn." in captions(at)


def test_draw_on_the_swap_and_attribution_pages():
    at = open_layers()
    at.switch_page("views/swap.py").run()
    at.radio(key="swap_a_source").set_value("Draw").run()
    at.radio(key="swap_b_source").set_value("Upload").run()
    ok(at)
    at.session_state["swap_a_canvas"] = canvas_state(drawn_one())
    at.run()
    ok(at)
    assert previews(at) == [PREVIEW]
    at.switch_page("views/attribution.py").run()
    at.radio(key="attr_source").set_value("Draw").run()
    ok(at)


def test_rgb_model_gets_no_prepare_toggle(tmp_path):
    save_checkpoint(tmp_path / "rgb.pt", SWWAE(rgb32_config(channels=(4, 8, 8))))
    at = open_layers()
    at.file_uploader(key=sidebar.MODEL_UPLOAD).set_value(("rgb.pt", (tmp_path / "rgb.pt").read_bytes(),
                                                          "application/octet-stream")).run()
    assert at.session_state[sidebar.MODEL_LOADED].startswith("upload:")
    at.radio(key="layers_source").set_value("Upload").run()
    at.file_uploader(key="layers_upload").set_value(("one.jpg", photo_of_a_one(), "image/jpeg")).run()
    ok(at)
    assert not [t for t in at.toggle if t.key == "layers_prepare"]
    assert not previews(at)  # the preview is for digit-like models
    at.radio(key="layers_source").set_value("Draw").run()
    at.session_state["layers_canvas"] = canvas_state(drawn_one())
    at.run()
    ok(at)
    assert previews(at) == ["What the model sees (32x32)"]


@pytest.mark.parametrize("state", [
    {"drawing": {"raw": [{"type": "path"}], "data": None}, "backgroundFit": None},  # JSON that is a list
    {"drawing": {"raw": {"objects": "path"}, "data": None}, "backgroundFit": None},  # objects that are no list
    {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": "data:image/png,iVBORw0KGgo="},
     "backgroundFit": None},  # a data URL without ;base64,
    {"drawing": {"raw": {"objects": [{"type": "path"}]}, "data": "data:image/png;base64,@@not base64@@"},
     "backgroundFit": None},
])
def test_hostile_canvas_values_are_one_warning_not_a_crash(state):
    """Issue 18 item 12: the browser controls what the canvas sends back."""
    at = open_layers()
    at.radio(key="layers_source").set_value("Draw").run()
    at.session_state["layers_canvas"] = state
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [w.value for w in at.warning if w.value.startswith("Drawing ignored: the canvas sent")]


def test_a_refused_upload_is_decoded_once_not_on_every_rerun(monkeypatch):
    """Issue 18 item 4: a refusal was an exception, never cached, so a slow bad file cost its time on every rerun;
    the same bytes through the canvas were silently ignored."""
    import app.inputs
    from tests.test_memory_limits import many_page_tiff

    calls = []
    real = app.inputs.decode_image
    monkeypatch.setattr(app.inputs, "decode_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = open_layers()
    at.radio(key="layers_source").set_value("Upload").run()
    at.toggle(key="layers_prepare").set_value(False).run()
    at.file_uploader(key="layers_upload").set_value(("pages.tif", many_page_tiff(3_000) + b"x", "image/tiff")).run()
    for _ in range(3):
        at.run()
        assert not at.exception and [e.value for e in at.error if "multi-page" in e.value]
    assert len(calls) == 1
