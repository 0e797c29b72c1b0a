"""Plain re-implementations of the SyncDiffusion paper's coherence metrics (official eval_code protocol), for the
tests; independent of ``sync_core`` on purpose: one model call per crop pair, Gram matrices by hand, explicit loops.

- ``plain_boxes(h, w, crop, stride)``: row-major crop grid, right/bottom remainder dropped.
- ``plain_intra_lpips(model, images [N,3,H,W] in [0,1], crop)``: ``lpips.LPIPS`` on every pair of crops in
  [-1, 1]; mean over pairs, then over panoramas. Returns ``(mean, per_image list)``.
- ``plain_intra_style(vgg19_state_dict, images, crop)``: torchvision ``vgg19().features``; shorter side resized to
  ``crop`` (torchvision ``Resize``); ImageNet normalisation; Gram ``F F^T / (C H W)`` of the first five conv
  outputs (before ReLU); ``mse_loss`` per layer summed; SUM over pairs, then mean over panoramas.
"""

import torch
import torchvision


def plain_boxes(height, width, crop, stride):
    """Row-major crop grid, remainder dropped (the paper's evaluation protocol), written out."""
    out = []
    top = 0
    while top + crop <= height:
        left = 0
        while left + crop <= width:
            out.append((top, top + crop, left, left + crop))
            left += stride
        top += stride
    return out


def plain_intra_lpips(model, images, crop):
    values = []
    for image in images:
        crops = [
            image[:, top:bottom, left:right] * 2 - 1
            for top, bottom, left, right in plain_boxes(image.shape[1], image.shape[2], crop, crop)
        ]
        total, count = 0.0, 0
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                total += model(crops[i][None], crops[j][None]).item()  # one LPIPS call per pair, like the paper
                count += 1
        values.append(total / count)
    return sum(values) / len(values), values


def _gram_by_hand(feature):
    c, h, w = feature.shape
    flat = feature.reshape(c, h * w)
    return flat @ flat.t() / (c * h * w)


def plain_intra_style(vgg19_state_dict, images, crop):
    features = torchvision.models.vgg19(weights=None).features
    features.load_state_dict({k[len("features.") :]: v for k, v in vgg19_state_dict.items()})
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    resize = torchvision.transforms.Resize(crop, antialias=True)  # the official loader's Resize(512), on a tensor

    def grams(x):
        x = ((x - mean) / std)[None]
        out, convs = [], 0
        for layer in features:
            if isinstance(layer, torch.nn.ReLU):
                layer = torch.nn.ReLU(inplace=False)
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d):
                convs += 1
                out.append(_gram_by_hand(x[0]))
                if convs == 5:
                    return out

    values = []
    for image in images:
        image = resize(image[None])[0]
        crops = [
            image[:, top:bottom, left:right]
            for top, bottom, left, right in plain_boxes(image.shape[1], image.shape[2], crop, crop)
        ]
        total = 0.0
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                ga, gb = grams(crops[i]), grams(crops[j])
                total += sum(torch.nn.functional.mse_loss(gb_k, ga_k).item() for ga_k, gb_k in zip(ga, gb))
        values.append(total)  # the official code sums over pairs
    return sum(values) / len(values), values
