"""TESLA (Luo et al., "Modeling Cascaded Delay Feedback for Online Net Conversion Rate
Prediction", WWW'26, arXiv 2601.19965): the NetCVR model.

Architecture (Sec. 4.1): the CVR x (1 - refund rate) cascade of :class:`~rankstream.models.
cascade.CascadeNet` with private + shared field embeddings per tower (the repo's
``PretrainEsdfmRF_PLE``). What makes it TESLA is in its training (``train/stream_methods.py``
and ``objectives/delayed.py``): stage-wise debiasing of BOTH stages with importance weights from
the frozen pre-trained model and two auxiliary models (conversion in window / real negative;
refund in window / real non-refund), and the delay-time-aware ranking loss on each stage
(50 sampled negatives per conversion, 5 per refund; weighted 1 in the CVR stage and 0.1 in the
refund stage, as the repo's ``refund_loss_fn_wi_DelayTimeBpr``). Differences from the paper: see
CascadeNet (sparse embedding updates); the refund adapter of the repo's class is unused there
and omitted here.
"""

from __future__ import annotations

from dataclasses import replace

from rankstream.models.cascade import CascadeConfig, CascadeNet
from rankstream.registry import register_model


@register_model("tesla", CascadeConfig, task="stream")
def build_tesla(cfg: CascadeConfig, field_sizes: tuple[int, ...]) -> CascadeNet:
    """TESLA: CVR x (1 - refund) cascade with shared + private embeddings (arXiv 2601.19965)."""
    return CascadeNet(replace(cfg, shared_embeddings=True), field_sizes)
