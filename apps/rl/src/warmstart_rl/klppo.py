"""VPT's RL fine-tuning loss: stable-baselines3 PPO plus ``rho * KL(pi_pretrained || pi_theta)``, rho
decayed geometrically per PPO epoch, so the fine-tuned policy does not forget the foundation policy early.

Seed: *Video PreTraining (VPT)* (Baker et al., arXiv 2206.11795), section 4.4 (the KL to the frozen
pretrained policy during RL fine-tuning). :meth:`KLPPO.train` is stable-baselines3's ``PPO.train`` (MIT
licence) restated with that one extra loss term; SB3 offers no hook to add a loss, so it is rewritten
rather than patched. Left out: VPT's phasic policy gradient and its value pretraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def kl_ppo_class():
    from gymnasium import spaces
    from stable_baselines3 import PPO
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.common.utils import explained_variance

    class KLPPO(PPO):
        """SB3 PPO plus ``kl_coef * kl_decay**n_updates * KL(pi_ref || pi_theta)`` (VPT's auxiliary loss)."""

        def __init__(
            self,
            *args: Any,
            reference: nn.Module | None = None,
            kl_coef: float = 0.0,
            kl_decay: float = 1.0,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.reference = reference.to(self.device).eval() if reference is not None else None
            if self.reference is not None:
                for p in self.reference.parameters():
                    p.requires_grad_(False)
            self.kl_coef, self.kl_decay = kl_coef, kl_decay

        def train(self) -> None:
            if self.reference is None or self.kl_coef == 0.0:
                return super().train()
            self.policy.set_training_mode(True)
            self._update_learning_rate(self.policy.optimizer)
            clip_range = self.clip_range(self._current_progress_remaining)
            clip_range_vf = (
                self.clip_range_vf(self._current_progress_remaining)
                if self.clip_range_vf is not None
                else None
            )
            coef = self.kl_coef * self.kl_decay**self._n_updates
            pg_losses, value_losses, entropy_losses, kl_refs, clip_fractions = [], [], [], [], []
            continue_training = True
            for _ in range(self.n_epochs):
                approx_kl_divs = []
                for data in self.rollout_buffer.get(self.batch_size):
                    actions = data.actions
                    if isinstance(self.action_space, spaces.Discrete):
                        actions = data.actions.long().flatten()
                    features = self.policy.extract_features(data.observations)
                    latent_pi, latent_vf = self.policy.mlp_extractor(features)
                    dist = self.policy._get_action_dist_from_latent(latent_pi)
                    log_prob, entropy = dist.log_prob(actions), dist.entropy()
                    values = self.policy.value_net(latent_vf).flatten()
                    advantages = data.advantages
                    if self.normalize_advantage and len(advantages) > 1:
                        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                    ratio = torch.exp(log_prob - data.old_log_prob)
                    policy_loss = -torch.min(
                        advantages * ratio, advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
                    ).mean()
                    values_pred = (
                        values
                        if clip_range_vf is None
                        else data.old_values
                        + torch.clamp(values - data.old_values, -clip_range_vf, clip_range_vf)
                    )
                    value_loss = F.mse_loss(data.returns, values_pred)
                    entropy_loss = -torch.mean(entropy)
                    with torch.no_grad():
                        obs = preprocess_obs(
                            data.observations, self.observation_space, self.policy.normalize_images
                        )
                        ref_logp = torch.log_softmax(self.reference(obs), -1)  # (B, A)
                    logp = torch.log_softmax(dist.distribution.logits, -1)  # (B, A)
                    kl_ref = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean()
                    loss = (
                        policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss + coef * kl_ref
                    )
                    with torch.no_grad():
                        log_ratio = log_prob - data.old_log_prob
                        approx_kl = torch.mean((torch.exp(log_ratio) - 1) - log_ratio).item()
                    approx_kl_divs.append(approx_kl)
                    if self.target_kl is not None and approx_kl > 1.5 * self.target_kl:
                        continue_training = False
                        break
                    self.policy.optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                    self.policy.optimizer.step()
                    pg_losses.append(policy_loss.item())
                    value_losses.append(value_loss.item())
                    entropy_losses.append(entropy_loss.item())
                    kl_refs.append(kl_ref.item())
                    clip_fractions.append(torch.mean((torch.abs(ratio - 1) > clip_range).float()).item())
                self._n_updates += 1
                if not continue_training:
                    break
            explained_var = explained_variance(
                self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
            )
            self.logger.record("train/entropy_loss", float(np.mean(entropy_losses or [0.0])))
            self.logger.record("train/policy_gradient_loss", float(np.mean(pg_losses or [0.0])))
            self.logger.record("train/value_loss", float(np.mean(value_losses or [0.0])))
            self.logger.record("train/approx_kl", float(np.mean(approx_kl_divs or [0.0])))
            self.logger.record("train/kl_to_pretrained", float(np.mean(kl_refs or [0.0])))
            self.logger.record("train/kl_coef", coef)
            self.logger.record("train/clip_fraction", float(np.mean(clip_fractions or [0.0])))
            self.logger.record("train/explained_variance", float(explained_var))
            self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    return KLPPO
