"""H&E stain augmentation: jitter the haematoxylin, eosin and DAB densities of a tile (HED jitter).

Slides from different labs, scanners and staining days differ mostly in how much of each stain the
tissue took up, not in arbitrary RGB shifts. Tellez et al. (arXiv:1902.06543) found jitter in stain
space among the best augmentations for that: colour deconvolution (Ruifrok & Johnston,
``skimage.color.rgb2hed``) to the optical density of each stain, a random scale ``1 + α`` and shift
``β`` per stain, and back to RGB. Their "HED-light" setting (``α, β`` in ±0.05, ``β`` in optical
density) is the default. MONAI has no stain-space transform (its intensity jitter acts on RGB
channels), hence these few lines.

The jitter acts on RGB in 0…255 (the tile as ingested), so in a preset it runs before the z-score.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform
from skimage.color import hed2rgb, rgb2hed

from clinical.errors import ConfigurationError

__all__ = ["RandHEDJitterd"]

#: ``rgb2hed`` divides optical densities by this (``-log(1e-6)``, its floor on RGB).
_SKIMAGE_DENSITY = -np.log(1e-6)


class RandHEDJitterd(RandomizableTransform, MapTransform):
    """With probability ``prob``, scale each stain density by ``1 + U(-sigma, sigma)``, shift it by ``U(-bias, bias)``.

    Takes ``(3, H, W)`` RGB in 0…255 (tensor or array) and returns a float32 tensor of the same shape, in
    0…255. ``bias`` is in optical density (natural log), the unit of the paper; ``rgb2hed`` scales densities
    by ``1 / ln(10⁶)``, and the shift is scaled the same way. White glass has no density, so the scale
    leaves it alone and only the shift tints it (by up to about 20 of 255 levels at the default).

    Raises
    ------
    ConfigurationError
        ``sigma`` or ``bias`` negative, or an image without three channels first.
    """

    def __init__(self, keys: str, *, prob: float = 0.5, sigma: float = 0.05, bias: float = 0.05) -> None:
        if sigma < 0 or bias < 0:
            raise ConfigurationError(f"sigma and bias must be ≥ 0; got sigma={sigma}, bias={bias}.")
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.sigma, self.bias = sigma, bias
        self._scale = self._shift = np.zeros(3)

    def randomize(self, data: object = None) -> None:
        super().randomize(None)
        self._scale = self.R.uniform(-self.sigma, self.sigma, 3)
        self._shift = self.R.uniform(-self.bias, self.bias, 3)

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        self.randomize()
        for key in self.key_iterator(out):
            image = torch.as_tensor(out[key], dtype=torch.float32)
            if image.ndim != 3 or image.shape[0] != 3:
                raise ConfigurationError(f"HED jitter takes RGB tiles (3, H, W); got shape {list(image.shape)}.")
            if self._do_transform:
                rgb = np.clip(image.cpu().numpy().transpose(1, 2, 0) / 255.0, 0.0, 1.0)
                hed = rgb2hed(rgb) * (1.0 + self._scale) + self._shift / _SKIMAGE_DENSITY
                image = torch.as_tensor(np.clip(hed2rgb(hed), 0.0, 1.0).transpose(2, 0, 1) * 255.0,
                                        dtype=torch.float32)
            out[key] = image
        return out
