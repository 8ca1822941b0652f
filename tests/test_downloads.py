"""Downloads: every explorer page offers them; the bytes open (a PNG decodes, at print resolution where asked; a CSV
parses back to the numbers); file names say model, image and stage."""
import csv
import io

import numpy as np
from PIL import Image

from app.downloads import csv_bytes, file_name, model_tag
from core.analysis import Tile, panel_png, print_png
from tests.test_app import ok, open_page, open_section


def download_names(at) -> list[str]:
    return [d.label for d in at.get("download_button")]


def test_every_explorer_page_offers_downloads():
    at = open_page("layers")
    assert len(download_names(at)) >= 3  # overview, where map, unit and top images
    for page, least in (("swap", 3), ("compare", 3)):
        at.switch_page(f"views/{page}.py").run()
        ok(at)
        assert len(download_names(at)) >= least, (page, download_names(at))
    at.switch_page("views/swap.py").run()
    open_section(at, "Swap matrix")
    assert "Download the MSE matrix (CSV)" in download_names(at)


def test_csv_parses_back_to_the_numbers():
    columns = {"image": ["A reconstructed", "B's content, A's switches"], "MSE to A": [0.0052, 0.0298]}
    rows = list(csv.reader(io.StringIO(csv_bytes(columns).decode())))
    assert rows[0] == ["image", "MSE to A"]
    assert [float(r[1]) for r in rows[1:]] == columns["MSE to A"] and rows[2][0] == "B's content, A's switches"


def test_print_png_is_a_column_wide_at_300_dpi_with_the_pixels_crisp():
    rng = np.random.default_rng(0)
    tiles = [Tile(f"t{i}", rng.random((28, 28))) for i in range(6)]
    image = Image.open(io.BytesIO(print_png(tiles, 6)))
    assert image.width >= 3.5 * 300 and round(image.info["dpi"][0]) == 300
    screen = Image.open(io.BytesIO(panel_png(tiles, 6, scale=2)))
    assert image.width > 2 * screen.width


def test_file_names_say_model_image_and_stage():
    name = file_name("lens", model_tag("checkpoints/fashion.pt"), "#3 (Ankle boot)", "stage-2", "channel-5", ext="svg")
    assert name == "swwae_lens_fashion_3-Ankle-boot_stage-2_channel-5.svg"
    assert model_tag("default (shipped)") == "default" and model_tag("uploaded: my model.pt") == "my-model"
