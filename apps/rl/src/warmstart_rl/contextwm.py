"""ContextWM in three rooms: :mod:`warmstart_rl.worldmodel` (the contextualized world model and its I/O),
:mod:`warmstart_rl.wmpretrain` (action-free pretraining on videos of any environment) and
:mod:`warmstart_rl.agent` (action-conditioned fine-tuning + the imagination actor-critic). This module
re-exports them under the names the app used before the split.

Seed: *Pre-training Contextualized World Models with In-the-wild Videos for Reinforcement Learning*
(Wu et al., arXiv 2305.18499).
"""

from warmstart_rl.agent import (
    ActorCritic,
    AgentConfig,
    Replay,
    imagine_update,
    lambda_returns,
    load_agent,
    save_agent,
    train_agent,
)
from warmstart_rl.wmpretrain import ClipDataset, PretrainConfig, heldout_recon, pretrain_world_model
from warmstart_rl.worldmodel import (
    KIND,
    RSSM,
    WorldModel,
    WorldModelConfig,
    load_world_model,
    save_world_model,
    symexp,
    symlog,
)

__all__ = [
    "KIND",
    "RSSM",
    "ActorCritic",
    "AgentConfig",
    "ClipDataset",
    "PretrainConfig",
    "Replay",
    "WorldModel",
    "WorldModelConfig",
    "heldout_recon",
    "imagine_update",
    "lambda_returns",
    "load_agent",
    "load_world_model",
    "pretrain_world_model",
    "save_agent",
    "save_world_model",
    "symexp",
    "symlog",
    "train_agent",
]
