"""B-Coder's Q-function: LM-initialised policy, conservative targets, and a value that learns the reward."""

from __future__ import annotations

import math

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from warmstart_code.bcoder import (
    BCoderConfig,
    BCoderTask,
    QModel,
    advantage,
    conservative_targets,
    load_qmodel,
    pair_accuracy,
    q_of_taken,
    rerank,
    save_value_head,
)


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
    q_all = value.unsqueeze(-1) + advantage(logp, model.beta)  # (B, T, V)
    policy = torch.softmax(q_all / model.beta, -1)
    lm_policy = torch.softmax(lm(input_ids=batch["input_ids"]).logits, -1)
    torch.testing.assert_close(policy, lm_policy, atol=1e-5, rtol=1e-5)
    # the advantage is max-normalised: the greedy action's Q is V(s), every other action's is below it
    torch.testing.assert_close(q_all.max(-1).values, value)
    assert bool((q_all <= value.unsqueeze(-1) + 1e-6).all())


def test_conservative_target_is_reward_at_the_end_and_target_network_bootstrap_before():
    model = QModel(_lm(), beta=1.0).eval()  # no dropout: targets and the check see the same network
    torch.nn.init.normal_(model.value_head.weight)  # a non-trivial V ...
    model.update_target(1.0)  # ... copied into the target network
    batch = _batch([1.0, 0.0])
    q, logp, value = q_of_taken(model, batch)
    target = conservative_targets(model, batch)
    assert target[:, -1].tolist() == [1.0, 0.0]  # the last action's target is the test reward
    # at initialisation π0's greedy action is the target's greedy action: y_t = V_target(s_{t+1}), with no
    # per-token penalty (the old bootstrap added β·log π(a*) < 0 at every step)
    t = 5
    torch.testing.assert_close(target[:, t], value[:, t + 1].detach())
    # once the online LM moves away from π0, the bootstrap uses π0's action scored by the target network
    with torch.no_grad():
        for p in model.target_lm.parameters():
            p.add_(0.5 * torch.randn_like(p))
    greedy = model.reference(input_ids=batch["input_ids"]).logits.argmax(-1)  # π0's action  (B, T)
    out = model.target_lm(input_ids=batch["input_ids"], output_hidden_states=True)
    logp_t = torch.log_softmax(out.logits, -1)
    v_t = model.target_value(out.hidden_states[-1]).squeeze(-1)
    adv = advantage(logp_t, 1.0).gather(-1, greedy.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(
        conservative_targets(model, batch)[:, t], (v_t + adv)[:, t + 1], atol=1e-5, rtol=1e-5
    )


def test_target_network_follows_by_polyak_or_by_period():
    model = QModel(_lm(), beta=1.0)
    with torch.no_grad():
        model.value_head.bias.fill_(1.0)
    polyak = BCoderTask(model, BCoderConfig(target_update="polyak", tau=0.25))
    polyak.loss(_batch([1.0]))
    assert float(model.target_value.bias) == 0.25  # 0.25 * 1 + 0.75 * 0
    model2 = QModel(_lm(), beta=1.0)
    periodic = BCoderTask(model2, BCoderConfig(target_update="periodic", target_period=3))
    for step in range(4):
        with torch.no_grad():
            model2.value_head.bias.fill_(float(step + 1))
        periodic.loss(_batch([1.0]))
        assert float(model2.target_value.bias) == (1.0 if step < 3 else 4.0)  # copied at steps 0 and 3


def test_value_head_round_trips_through_the_hub_and_the_old_layout_still_loads(tmp_path):
    from safetensors.torch import save_file

    model = QModel(_lm(), beta=0.3)
    torch.nn.init.normal_(model.value_head.weight)
    cfg = BCoderConfig(beta=0.3, tau=0.1)
    save_value_head(model, tmp_path / "value_head", cfg)
    loaded, loaded_cfg = load_qmodel(_lm(), tmp_path)
    assert loaded_cfg.beta == 0.3 and loaded_cfg.tau == 0.1
    torch.testing.assert_close(loaded.value_head.weight, model.value_head.weight)
    old = tmp_path / "old"
    old.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.value_head.state_dict().items()},
        str(old / "value_head.safetensors"),
    )
    (old / "bcoder.json").write_text('{"beta": 0.3, "samples_per_task": 4}')
    legacy, legacy_cfg = load_qmodel(_lm(), old)
    assert legacy_cfg.beta == 0.3
    torch.testing.assert_close(legacy.value_head.weight, model.value_head.weight)


def test_td_training_separates_passing_from_failing_programs():
    model = QModel(_lm(), beta=1.0)
    batch = _batch([1.0, 0.0, 1.0, 0.0])
    task = BCoderTask(model, BCoderConfig(beta=1.0), bc_weight=0.0)
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
