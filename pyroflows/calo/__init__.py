"""Two-step conditional generation of calorimeter-like showers (CaloFlow style):
:class:`TwoStepGenerator` (flow I, flow II teacher, distilled student) and the encoding of
zero-suppressed voxels it trains on (:mod:`pyroflows.calo.encoding`), with optionally fresh
dequantisation noise every epoch (:mod:`pyroflows.calo.redequantise`)."""

from pyroflows.calo.generator import GeneratedShowers, TwoStepGenerator

__all__ = ["GeneratedShowers", "TwoStepGenerator"]
