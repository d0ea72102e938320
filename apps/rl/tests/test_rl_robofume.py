"""RoboFuME: the Cal-QL calibration, classifier reward labelling, and the `robofume` command end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from warmstart_rl.cli import app
from warmstart_rl.data import EnvConfig
from warmstart_rl.models import PixelPolicy, PolicyConfig
from warmstart_rl.robofume import RoboFuMEConfig, calql_loss, label_episode, reset_free_finetune


class _Table(nn.Module):
    """A 'Q-network' returning a fixed learnable table (B, A) regardless of the frames."""

    def __init__(self, q: torch.Tensor) -> None:
        super().__init__()
        self.q = nn.Parameter(q.clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q


def _batch(mc: float) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.zeros(2, 3, 4, 4),
        "next_obs": torch.zeros(2, 3, 4, 4),
        "action": torch.tensor([0, 1]),
        "reward": torch.zeros(2),
        "done": torch.ones(2),  # no bootstrap: the TD part is (Q - 0)
        "mc_return": torch.full((2,), mc),
    }


def test_calql_never_pushes_q_below_the_monte_carlo_return() -> None:
    q = torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.2, -0.1]])
    table = _Table(q)
    # CQL (a very low reference value): the regulariser pushes down every action's Q
    _, metrics = calql_loss(table, table, _batch(-100.0), gamma=0.9, alpha=1.0)
    expected = (torch.logsumexp(q, -1) - q[[0, 1], [0, 1]]).mean()
    assert metrics["calql_reg"] == pytest.approx(float(expected), rel=1e-5)
    # Cal-QL: with V_mc above every Q, the push-down is clipped: non-data actions get no gradient from it
    table.zero_grad()
    loss, metrics = calql_loss(table, table, _batch(5.0), gamma=0.9, alpha=1.0)
    loss.backward()
    grad = table.q.grad
    assert metrics["calql_reg"] >= 0
    assert torch.allclose(grad[0, 1:], torch.zeros(2)) and torch.allclose(grad[1, [0, 2]], torch.zeros(2))


class _Detector(nn.Module):
    """Success logit = +10 when the frame is bright, -10 otherwise."""

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.mean((1, 2, 3)) > 0.5).float()[:, None] * 20 - 10


def test_label_episode_rewards_cut_at_first_success_and_mc_returns() -> None:
    frames = np.zeros((6, 4, 4, 3), np.uint8)
    frames[3] = frames[5] = 255  # success seen at o_3 (transition t = 2) and again at o_5
    data = label_episode(frames, np.arange(5) % 3, _Detector(), gamma=0.5)
    assert len(data) == 3  # cut after the first detection
    np.testing.assert_array_equal(data.reward, [0, 0, 1])
    np.testing.assert_array_equal(data.done, [0, 0, 1])
    np.testing.assert_allclose(data.mc_return, [0.25, 0.5, 1.0])
    # no success detected: a terminated episode (a collision) ends in a terminal step, a truncated one does not
    dark = np.zeros((4, 4, 4, 3), np.uint8)
    np.testing.assert_array_equal(label_episode(dark, np.zeros(3), _Detector(), 0.5, True).done, [0, 0, 1])
    np.testing.assert_array_equal(label_episode(dark, np.zeros(3), _Detector(), 0.5).done, [0, 0, 0])


FAST = ["--engine.train.max_steps", "30", "--engine.logging.progress", "none", "--options.eval_episodes", "1"]


def test_robofume_end_to_end(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "demos"
    assert (
        app.main(["collect", "--episodes", "8", "--labelled", "8", "--noise", "0.1", "--out", str(data)]) == 0
    )
    out = tmp_path / "rf"
    argv = [
        "robofume",
        "--data",
        str(data),
        *FAST,
        "--options.online_steps",
        "40",
        "--options.batch_size",
        "8",
    ]
    assert app.main([*argv, "--out", str(out)]) == 0
    spec = json.loads((out / "qnet" / "config.json").read_text())
    assert (out / "classifier" / "model.safetensors").is_file() and spec["warmstart_kind"] == "rl.q-network"
    m = spec["metrics"]
    assert m["offline/detected_successes"] >= 1  # the classifier finds goal images in the demos
    assert 0.0 <= m["return/offline"] <= 1.0 and 0.0 <= m["return/online"] <= 1.0
    assert 0.0 <= m["classifier/balanced_acc"] <= 1.0
    # the episode returns as a TensorBoard figure + scalars and as returns.png
    assert (out / "returns.png").stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "episode_return" in events.Tags()["images"]
    assert len(events.Scalars("episode/return")) == len(json.loads((out / "curve.json").read_text()))

    # no demonstrations with actions: one line, exit 2
    videos = tmp_path / "videos"
    assert app.main(["collect", "--episodes", "2", "--labelled", "0", "--out", str(videos)]) == 0
    capsys.readouterr()
    assert app.main(["robofume", "--data", str(videos)]) == 2
    assert "no labelled episodes" in one_line_error(capsys)


def test_robofume_bench_writes_report(tmp_path) -> None:
    out = tmp_path / "bench"
    argv = ["bench", "--kind", "robofume", "--robofume.seeds", "1", "--robofume.online_steps", "12"]
    argv += ["--robofume.demos", "4", "--robofume.engine_steps", "2", "--robofume.eval_episodes", "1"]
    argv += ["--robofume.reference_episodes", "1", "--robofume.phase_steps", "4", "--robofume.workers", "1"]
    argv += ["--robofume.env.env_id", "MiniGrid-Empty-Random-5x5-v0"]
    assert app.main([*argv, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").is_file() and (out / "plot.png").is_file()
    assert list(results["methods"]) == ["scratch", "robofume", "robofume reset-free"]
    report = (out / "report.md").read_text()
    assert "](returns.png)" in report and "## Paired per seed" in report
    for method in results["methods"].values():
        assert len(method["values"]) == 1 and all(0.0 <= v <= 1.0 for v in method["values"])
    # paired per seed: after - before online is exactly the two greedy returns' difference, seed by seed
    extra = results["extra_metrics"]
    before = extra["greedy return before online"]["robofume"]["values"]
    paired = results["paired"]["robofume: after - before online"]
    after = results["methods"]["robofume"]["values"]
    np.testing.assert_allclose(paired["per_seed"], np.asarray(after) - np.asarray(before))
    assert paired["ci"][0] <= paired["mean"] <= paired["ci"][1]
    # the reset-free arm per seed: either it ran (12 steps in phases of at most 4: >= 3 ended phases, each a
    # success or an intervention) or its initial-state classifier failed and it fell back to resets
    active = extra["reset-free kept (1) / fell back to resets (0)"]["robofume reset-free"]["values"]
    for seed, health in enumerate(results["health"]["robofume reset-free"]):
        assert health["fine_tuning"] == ("reset-free" if active[seed] else "resets")
        if active[seed]:
            ended = sum(
                extra[f"reset-free: {k}"]["robofume reset-free"]["values"][seed]
                for k in ("interventions", "forward successes", "backward successes")
            )
            assert 3 <= ended <= 12
        else:
            assert not health["initial_classifier"]["healthy"]
    assert "reset-free: interventions" in report


TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def _tiny_clip_checkpoint(tmp_path):
    import open_clip

    torch.manual_seed(1)
    model = open_clip.CLIP(TINY_CLIP["embed_dim"], TINY_CLIP["vision_cfg"], TINY_CLIP["text_cfg"])
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    weights = tmp_path / "tiny-clip.pt"
    torch.save({"state_dict": model.state_dict()}, weights)
    return model, config, weights


def test_clip_classifier_starts_from_the_pretrained_tower(tmp_path) -> None:
    from warmstart_rl.clipreward import ClipSuccessClassifier, build_clip_classifier

    source, config, weights = _tiny_clip_checkpoint(tmp_path)
    clf = build_clip_classifier("tiny", str(weights), str(config))
    for key, value in source.visual.state_dict().items():
        torch.testing.assert_close(clf.visual.state_dict()[key], value)  # the pretrained weights, not random
    assert clf(torch.rand(3, 3, 20, 20)).shape == (3, 1)  # any frame size: resized to the tower's 16 px
    clf.save_pretrained(tmp_path / "clf")
    again = ClipSuccessClassifier.from_pretrained(tmp_path / "clf")
    x = torch.rand(2, 3, 20, 20)
    torch.testing.assert_close(again(x), clf(x))


def test_robofume_with_an_open_clip_reward_backbone(tmp_path, capsys) -> None:
    from warmstart_rl.clipreward import ClipSuccessClassifier

    _, config, weights = _tiny_clip_checkpoint(tmp_path)
    data = tmp_path / "demos"
    assert (
        app.main(["collect", "--episodes", "6", "--labelled", "6", "--noise", "0.1", "--out", str(data)]) == 0
    )
    argv = [
        "robofume",
        "--data",
        str(data),
        *FAST,
        "--options.online_steps",
        "20",
        "--options.batch_size",
        "8",
    ]
    argv += ["--options.backbone", "tiny", "--options.backbone_config", str(config)]
    argv += ["--options.backbone_weights", str(weights), "--out", str(tmp_path / "rf")]
    assert app.main(argv) == 0
    clf = ClipSuccessClassifier.from_pretrained(tmp_path / "rf" / "classifier")
    assert clf.spec["weights"] == str(weights)
    capsys.readouterr()
    assert (
        app.main([*argv[:-2], "--options.backbone", "no-such-arch", "--options.backbone_config", "null"]) == 2
    )
    assert "not an open_clip architecture" in capsys.readouterr().err


class _Constant(nn.Module):
    """A classifier whose success logit is always ``logit``."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full((len(obs), 1), self.logit)


@pytest.mark.parametrize(("fires", "steps", "phase"), [(False, 12, 4), (True, 7, 50)])
def test_reset_free_alternates_forward_and_backward_and_counts_interventions(fires, steps, phase) -> None:
    env = EnvConfig("MiniGrid-Empty-5x5-v0", size=12)
    torch.manual_seed(0)
    nets = [PixelPolicy(3, 12, 3, PolicyConfig()) for _ in range(2)]
    detector = _Constant(10.0 if fires else -10.0)
    config = RoboFuMEConfig(online_steps=steps, phase_steps=phase, batch_size=4, reset_free=True)
    out = reset_free_finetune(nets[0], nets[1], detector, detector, None, env, config, seed=0)
    if fires:  # every step succeeds: forward, backward, forward, ... and nobody resets anything
        assert (out["success_detections"], out["backward_successes"], out["interventions"]) == (4, 3, 0)
    else:  # no phase ever succeeds: a reset after every phase_steps steps
        assert (out["success_detections"], out["backward_successes"]) == (0, 0)
        assert out["interventions"] == steps // phase
    with pytest.raises(Exception, match="MiniGrid"):
        reset_free_finetune(nets[0], nets[1], detector, detector, None, EnvConfig("CartPole-v1"), config, 0)


def test_robofume_reset_free_end_to_end(tmp_path, capsys, one_line_error) -> None:
    data = tmp_path / "demos"
    assert (
        app.main(["collect", "--episodes", "6", "--labelled", "6", "--noise", "0.1", "--out", str(data)]) == 0
    )
    argv = [
        "robofume",
        "--data",
        str(data),
        *FAST,
        "--options.online_steps",
        "30",
        "--options.batch_size",
        "8",
    ]
    argv += ["--options.reset_free", "true", "--options.phase_steps", "10"]
    assert app.main([*argv, "--out", str(tmp_path / "rf")]) == 0
    m = json.loads((tmp_path / "rf" / "qnet" / "config.json").read_text())["metrics"]
    runs = (
        m["reset_free/forward_successes"] + m["reset_free/backward_successes"] + m["reset_free/interventions"]
    )
    assert 1 <= runs <= 30  # every ended phase is a success or an intervention
    assert 0.0 <= m["initial_classifier/balanced_acc"] <= 1.0
    assert (tmp_path / "rf" / "qnet-backward" / "model.safetensors").is_file()
    capsys.readouterr()
    assert app.main([*argv, "--env.env_id", "CartPole-v1", "--out", str(tmp_path / "cp")]) == 2
    assert "reset-free" in one_line_error(capsys)
