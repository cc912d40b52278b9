"""Building blocks: MLP and conv encoders/decoders, the Gaussian encoder head."""

from .blocks import ARCHS, GaussianHead, build_decoder, build_encoder

__all__ = ["ARCHS", "GaussianHead", "build_decoder", "build_encoder"]
