"""Data for continued pretraining: packing, mixtures with replay, MeCo metadata conditioning, quality selection,
and the one seeded per-epoch permutation (:mod:`warmstart.data.sampling`).

The streams (:class:`PackedStream`, :class:`Mixture`) have ``state_dict()``/``load_state_dict()`` so the
engine resumes them exactly.
"""

from warmstart.data.meco import DEFAULT_TEMPLATE, MeCo, meco_prefix, url_domain
from warmstart.data.mixture import Mixture, replay_mixture
from warmstart.data.packing import (
    BlockBuffer,
    PackedStream,
    collate_blocks,
    document_attention_mask,
    first_fit_decreasing,
    pack_documents_ffd,
    pack_sequences,
)
from warmstart.data.quality import (
    HashedNgramRater,
    HeuristicFilter,
    PerplexityScorer,
    QualitySelection,
    Scorer,
    select_by_quality,
)
from warmstart.data.sampling import EpochSampler, epoch_order, epoch_permutation

__all__ = [
    "DEFAULT_TEMPLATE",
    "BlockBuffer",
    "EpochSampler",
    "HashedNgramRater",
    "HeuristicFilter",
    "MeCo",
    "Mixture",
    "PackedStream",
    "PerplexityScorer",
    "QualitySelection",
    "Scorer",
    "collate_blocks",
    "document_attention_mask",
    "epoch_order",
    "epoch_permutation",
    "first_fit_decreasing",
    "meco_prefix",
    "pack_documents_ffd",
    "pack_sequences",
    "replay_mixture",
    "select_by_quality",
    "url_domain",
]
