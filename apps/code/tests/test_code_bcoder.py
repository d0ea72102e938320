"""B-Coder's Q-function: LM-initialised policy, conservative targets, and a value that learns the reward."""

from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from warmstart_code.bcoder import BCoderTask, QModel, conservative_targets, pair_accuracy, q_of_taken, rerank


def _lm(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=17, n_positions=16, n_embd=16, n_layer=1, n_head=2))


def _batch(reward: list[float]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 17, (len(reward), 10), generator=g)  # (B, T)
    labels = ids.clone()
    labels[:, :4] = -100  # a 4-token prompt, a 6-token completion
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "reward": torch.tensor(reward),
    }


def test_q_policy_is_the_lm_at_initialisation():
    lm = _lm()
    model = QModel(lm, beta=0.5).eval()
    batch = _batch([1.0, 0.0])
    logp, value = model(batch["input_ids"], batch["attention_mask"])
    q_all = model.beta * logp + value.unsqueeze(-1)  # (B, T, V)
    policy = torch.softmax(q_all / model.beta, -1)
    lm_policy = torch.softmax(lm(input_ids=batch["input_ids"]).logits, -1)
    torch.testing.assert_close(policy, lm_policy, atol=1e-5, rtol=1e-5)


def test_conservative_target_is_reward_at_the_end_and_pi0_bootstrap_before():
    model = QModel(_lm(), beta=1.0).eval()  # no dropout: targets and the check see the same network
    torch.nn.init.normal_(model.value_head.weight)  # a non-trivial V
    batch = _batch([1.0, 0.0])
    q, logp, value = q_of_taken(model, batch)
    target = conservative_targets(model, batch, logp, value)
    assert target[:, -1].tolist() == [1.0, 0.0]  # the last action's target is the test reward
    greedy = model.reference(input_ids=batch["input_ids"]).logits.argmax(-1)  # π0's action
    t = 5  # an inner step: y_t = Q(s_{t+1}, argmax π0(s_{t+1}))
    expected = logp[:, t + 1].gather(-1, greedy[:, t + 1 : t + 2]).squeeze(-1) + value[:, t + 1]
    torch.testing.assert_close(target[:, t], expected.detach())
    not_max = logp[:, t + 1].max(-1).values + value[:, t + 1]
    assert not torch.allclose(target[:, t], not_max.detach()) or bool(
        (greedy[:, t + 1] == logp[:, t + 1].argmax(-1)).all()
    )


def test_td_training_separates_passing_from_failing_programs():
    model = QModel(_lm(), beta=1.0)
    batch = _batch([1.0, 0.0, 1.0, 0.0])
    task = BCoderTask(model, bc_weight=0.0)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(60):
        loss, _ = task.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    q, _, _ = q_of_taken(model, batch)
    final = q[:, -1].detach()
    assert final[0] > final[1] + 0.5 and final[2] > final[3] + 0.5
    assert rerank([final[:2].tolist(), final[2:].tolist()], [[True, False], [True, False]]) == 1.0


def test_pair_accuracy_counts_within_task_pairs():
    assert pair_accuracy([[0.9, 0.1, 0.5]], [[True, False, False]]) == 1.0
    assert pair_accuracy([[0.1, 0.9]], [[True, False]]) == 0.0
    # the all-pass task has no pair and is skipped; a tie counts one half
    assert pair_accuracy([[0.3, 0.3], [5.0, 1.0]], [[True, False], [True, True]]) == 0.5
    # pairs across tasks never count: task 1's passing program is below task 0's failing one
    assert pair_accuracy([[9.0, 8.0], [1.0, 0.0]], [[True, False], [True, False]]) == 1.0
    assert math.isnan(pair_accuracy([[1.0]], [[True]]))
