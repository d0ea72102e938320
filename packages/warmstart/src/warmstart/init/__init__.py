"""Reuse what a model already knows: vocabulary-expansion inits, model growth, learngene stages, SVD low rank."""

from warmstart.init.cw2v import CW2VConfig, CW2VResult, cw2v_rows
from warmstart.init.growth import GrowthMaps, grow, output_drift, unit_map
from warmstart.init.learngene import (
    build_from_stages,
    expand_stages,
    find_layer_list,
    share_stages,
    stage_of_layer,
)
from warmstart.init.lowrank import LowRankFactors, LowRankLinear, svd_lowrank
from warmstart.init.rows import (
    convex_rows,
    convex_weights,
    fvt_rows,
    make_generator,
    mean_rows,
    multivariate_rows,
    random_rows,
)
from warmstart.init.vocab import (
    METHODS,
    VocabExpansion,
    expand_vocabulary,
    fvt_pieces,
    init_new_rows,
    token_text,
)

__all__ = [
    "LowRankFactors",
    "LowRankLinear",
    "svd_lowrank",
    "build_from_stages",
    "expand_stages",
    "find_layer_list",
    "share_stages",
    "stage_of_layer",
    "GrowthMaps",
    "grow",
    "output_drift",
    "unit_map",
    "METHODS",
    "CW2VConfig",
    "CW2VResult",
    "VocabExpansion",
    "convex_rows",
    "convex_weights",
    "cw2v_rows",
    "expand_vocabulary",
    "fvt_pieces",
    "fvt_rows",
    "init_new_rows",
    "make_generator",
    "mean_rows",
    "multivariate_rows",
    "random_rows",
    "token_text",
]
