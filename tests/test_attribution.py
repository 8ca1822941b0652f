"""core.analysis.attribution against independent references: autograd for saliency, hand-written ReLU rules for
deconvolution and guided backprop, the completeness axiom for integrated gradients."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from core.analysis import METHODS, LogitsModel, attribute, attribute_all
from core.model import SWWAE, digits_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = SWWAE(digits_config(channels=(8, 16, 16), head_width=32))
    for module in net.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def image():
    return torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(1))


def logit_gradient(model, image, target, relu_rule=None):
    """d logit_target / d image, with every ReLU's backward replaced by `relu_rule(grad, input)` if given."""
    net = copy.deepcopy(model)

    class RuleReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.clamp(min=0)

        @staticmethod
        def backward(ctx, grad):
            return relu_rule(grad, ctx.saved_tensors[0])

    class Swapped(nn.Module):
        def forward(self, x):
            return RuleReLU.apply(x)

    if relu_rule is not None:
        for parent in list(net.modules()):
            for name, child in parent.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, Swapped())
    x = image.unsqueeze(0).clone().requires_grad_(True)
    net.encode(x).logits[0, target].backward()
    return x.grad[0].numpy()


def test_saliency_is_the_logit_gradient(model, image):
    result = attribute(model, image, "saliency", target=3)
    np.testing.assert_allclose(result.values, logit_gradient(model, image, 3), rtol=1e-5, atol=1e-7)


def test_deconvolution_passes_relu_of_the_gradient(model, image):
    result = attribute(model, image, "deconvolution", target=3)
    reference = logit_gradient(model, image, 3, lambda grad, x: grad.clamp(min=0))
    np.testing.assert_allclose(result.values, reference, rtol=1e-5, atol=1e-7)


def test_guided_backprop_masks_by_input_and_gradient(model, image):
    result = attribute(model, image, "guided_backprop", target=3)
    reference = logit_gradient(model, image, 3, lambda grad, x: grad.clamp(min=0) * (x > 0))
    np.testing.assert_allclose(result.values, reference, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_completeness(model, image):
    """Attributions sum to logit(image) - logit(black baseline), up to the integration error."""
    result = attribute(model, image, "integrated_gradients", target=5, ig_steps=128)
    with torch.no_grad():
        logits = model.encode(torch.stack([image, torch.zeros_like(image)])).logits[:, 5]
    assert result.values.sum() == pytest.approx((logits[0] - logits[1]).item(), rel=0.05, abs=1e-3)


def test_methods_differ_and_default_to_the_predicted_class(model, image):
    results = attribute_all(model, image)
    with torch.no_grad():
        predicted = int(model.encode(image.unsqueeze(0)).logits.argmax())
    assert [r.method for r in results] == list(METHODS)
    assert all(r.target == predicted and r.values.shape == (1, 28, 28) and r.scale > 0 for r in results)
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            assert not np.allclose(results[i].values, results[j].values), (results[i].method, results[j].method)
    assert all(np.abs(r.normalised).max() == pytest.approx(1.0) for r in results)


def test_the_model_is_left_untouched(model, image):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    attribute_all(model, image)
    assert all(m.inplace for m in relus)  # in-place as built; only the private copy was changed
    assert all(not m._backward_hooks and not m._forward_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert all(not m.inplace for m in LogitsModel(model).modules() if isinstance(m, nn.ReLU))


def test_bad_target_and_batch(model, image):
    with pytest.raises(ValueError, match="target class 10"):
        attribute(model, image, "saliency", target=10)
    with pytest.raises(ValueError, match="one image"):
        attribute(model, torch.rand(2, 1, 28, 28), "saliency")
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, image, "lime")
