"""Backbone families behind :mod:`clipflow.backbones.backbone`: one module per source of towers.

- :mod:`.open_clip_tower`: every open_clip architecture + pretrained tag (CLIP, SigLIP, EVA,
  timm-based towers such as ConvNeXt or MobileCLIP).
- :mod:`.timm_tower`: any timm image model, features = pooled pre-logits (``num_classes=0``).
- :mod:`.layers`: the class token of chosen transformer blocks (``backbone.layers``).
- :mod:`.protocol`: the plug-in point for your own extractor (:class:`BackboneProtocol`).

``clipflow.backbones.backbone`` stays the one import for users; these modules hold the family
details.
"""
