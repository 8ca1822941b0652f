"""'Unlike the training data': the two scores against independent formulas, the rank against numpy, and the shipped
models on inputs from the other dataset (a digit under the Fashion-MNIST model, a garment under the digits model)."""
import io

import numpy as np
import pytest
import torch

from bench.uploads import photo
from core.analysis import ENERGY_SCORE, RECON_SCORE, domain_rank, domain_scores
from core.data import decode_prepared, load_examples
from core.model import load_checkpoint
from tests.test_app import ROOT


def test_scores_are_the_reconstruction_mse_and_the_negative_logsumexp():
    model = load_checkpoint(ROOT / "checkpoints/default.pt").model.eval()
    images = load_examples("mnist5k", channels=1, image_size=28).images[:40]
    scores = domain_scores(model, images, classifier=True, batch_size=16)
    with torch.no_grad():
        encoding = model.encode(images)
        recon = model.decode(encoding).recon
    expected_mse = ((recon - images) ** 2).mean(dim=(1, 2, 3)).numpy()
    logits = encoding.logits.double().numpy()
    expected_energy = -(logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)))
    assert scores[RECON_SCORE] == pytest.approx(expected_mse, rel=1e-5)
    assert scores[ENERGY_SCORE] == pytest.approx(expected_energy, rel=1e-5)
    assert set(domain_scores(model, images, classifier=False)) == {RECON_SCORE}


def test_rank_is_the_share_strictly_below_and_the_99th_percentile():
    rng = np.random.default_rng(0)
    examples = {RECON_SCORE: rng.random(1000), ENERGY_SCORE: rng.normal(size=1000)}
    rank = domain_rank({RECON_SCORE: 0.5, ENERGY_SCORE: 3.5}, examples)
    assert rank.ranks[0].percentile == pytest.approx(100 * np.mean(examples[RECON_SCORE] < 0.5))
    assert rank.ranks[1].threshold == pytest.approx(np.percentile(examples[ENERGY_SCORE], 99))
    assert rank.unlike and not rank.ranks[0].unlike and rank.ranks[1].unlike
    assert rank.sentence("mnist5k").startswith("Unlike the training data (classifier energy over")
    assert not domain_rank({RECON_SCORE: 0.5, ENERGY_SCORE: 0.0}, examples).unlike
    with pytest.raises(ValueError, match="no example scores"):
        domain_rank({RECON_SCORE: 1.0}, {RECON_SCORE: np.zeros(0)})


def uploads(ink_images: torch.Tensor, style: str, longest: bool) -> torch.Tensor:
    """Photos of the images' ink (dark on paper, tilted, blurred, noisy), prepared as the app prepares uploads."""
    rng = np.random.default_rng(0)
    prepared = []
    for ink in ink_images[:, 0].numpy():
        buffer = io.BytesIO()
        photo(ink, rng, by_longest_side=longest).save(buffer, format="JPEG", quality=75)
        prepared.append(decode_prepared(buffer.getvalue(), style))
    return torch.stack(prepared)


def flagged(model_file: str, dataset: str, inputs: torch.Tensor) -> float:
    model = load_checkpoint(ROOT / model_file).model
    examples = domain_scores(model, load_examples(dataset, channels=1, image_size=28).images, classifier=True)
    scores = domain_scores(model, inputs, classifier=True)
    return float(np.mean([domain_rank({name: values[i] for name, values in scores.items()}, examples).unlike
                          for i in range(len(inputs))]))


def test_the_shipped_models_flag_the_other_datasets_photos():
    digits = load_examples("mnist5k", channels=1, image_size=28).images[::25]  # 20 digits, every class
    garments = load_examples("fashion-mnist", channels=1, image_size=28).images[::50]  # 20 garments, every class
    assert flagged("checkpoints/default.pt", "mnist5k", uploads(garments, "digit", False)) >= 0.9
    assert flagged("checkpoints/fashion.pt", "fashion-mnist", uploads(digits, "product", True)) >= 0.6
    assert flagged("checkpoints/fashion.pt", "fashion-mnist", uploads(garments, "product", True)) <= 0.15
    assert flagged("checkpoints/default.pt", "mnist5k", uploads(digits, "digit", False)) <= 0.35


def test_layers_warns_about_a_garment_photo_under_the_digits_model():
    from tests.test_app import ok, open_page

    garment = load_examples("fashion-mnist", channels=1, image_size=28).images[0, 0].numpy()  # an ankle boot
    buffer = io.BytesIO()
    photo(garment, np.random.default_rng(1), by_longest_side=True).save(buffer, format="JPEG", quality=75)
    at = open_page("layers")
    assert not any("training data" in w.value for w in at.warning)  # a dataset image: nothing to rank
    at.radio(key="layers_source").set_value("Upload").run()
    at.file_uploader(key="layers_upload").set_value(("boot.jpg", buffer.getvalue(), "image/jpeg")).run()
    ok(at)
    warning = next(w.value for w in at.warning if "training data" in w.value)
    assert warning.startswith("Unlike the training data") and "500 mnist5k examples" in warning
