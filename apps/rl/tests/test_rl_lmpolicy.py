"""LID (policy from a pretrained LM): words for observations, vocabulary, LM pretraining, the CLI command."""

from __future__ import annotations

import json

import numpy as np
import torch

from warmstart_rl.cli import app
from warmstart_rl.lmpolicy import (
    ENV_WORDS,
    LMPolicy,
    LMPolicyConfig,
    Vocab,
    build_lm,
    describe,
    pad,
    pretrain_lm,
)


def test_describe_places_objects_relative_to_the_agent() -> None:
    image = np.zeros((7, 7, 3), np.uint8)
    image[:, :, 0] = 1  # empty
    image[5, 3] = (5, 0, 0)  # red ball: two right, three ahead
    image[1, 6] = (4, 2, 0)  # blue key: two left, level with the agent
    image[3, 5, 0] = 2  # a wall right in front
    ws = describe("go to the red ball", image)
    text = " ".join(ws)
    assert text.startswith("go to the red ball .")
    assert "blue key left 2 ahead 0 ." in text and "red ball right 2 ahead 3 ." in text
    assert ws[-2:] == ["front", "wall"]


def test_vocab_keeps_every_env_word_whole() -> None:
    vocab = Vocab(["the", "cat", "sat", "on", "the", "mat", "the", "end"], size=len(ENV_WORDS) + 4)
    assert all(vocab.itos[vocab.encode([w])[0]] == w for w in ENV_WORDS)
    assert vocab.encode(["cat", "zebra"])[1] == 1  # unknown
    assert len(vocab) == len(ENV_WORDS) + 4


def test_lm_pretraining_lowers_the_loss_and_the_policy_pools_over_real_tokens() -> None:
    config = LMPolicyConfig(n_embd=16, n_layer=1, n_head=2, lm_steps=40, lm_seq=8, batch_size=8, lr=3e-3)
    ids = torch.tensor([2, 3, 4, 5, 6, 7] * 40)  # a repetitive "text": easy to learn
    lm = build_lm(10, config, seed=0)
    metrics = pretrain_lm(lm, ids, config, torch.Generator().manual_seed(0))
    assert metrics["lm/loss_last"] < 0.5 * metrics["lm/loss_first"]
    policy = LMPolicy(lm.transformer, 16, 3).eval()
    ids2, mask = pad([[2, 3, 4], [5, 6]], max_len=8)
    assert ids2.shape == (2, 3) and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    out = policy(ids2, mask)
    # padding must not change the output: the same sequence alone gives the same logits
    alone = policy(*pad([[5, 6]], max_len=8))
    torch.testing.assert_close(out[1], alone[0], atol=1e-5, rtol=1e-5)


def test_lm_policy_command_end_to_end(tmp_path) -> None:
    text = tmp_path / "text"
    text.mkdir()
    (text / "a.txt").write_text("go to the red ball and pick up the blue key on the left . " * 50)
    out = tmp_path / "lm"
    argv = ["lm-policy", "--setup.seeds", "1", "--text", str(text), "--out", str(out)]
    argv += ["--setup.episodes", "6", "--setup.heldout_episodes", "2", "--setup.lm_steps", "5"]
    argv += ["--setup.bc_steps", "5", "--setup.eval_episodes", "1", "--setup.n_embd", "16"]
    argv += ["--setup.lm_seq", "16", "--setup.vocab_size", "100"]
    assert app.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"random init", "LM init"}
    for method in results["methods"].values():
        assert 0.0 <= method["values"][0] <= 1.0


def test_lm_policy_bad_env_is_one_line_exit_2(tmp_path, capsys) -> None:
    text = tmp_path / "empty"
    text.mkdir()
    assert app.main(["lm-policy", "--text", str(text), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no .txt or .md files" in err and len(err.splitlines()) == 1
    (text / "a.txt").write_text("some words " * 100)
    argv = [
        "lm-policy",
        "--text",
        str(text),
        "--setup.env_id",
        "MiniGrid-Empty-5x5-v0",
        "--out",
        str(tmp_path / "p"),
    ]
    assert app.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "BabyAI" in err and len(err.splitlines()) == 1
