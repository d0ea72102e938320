"""Models: the padded-batch subsampler workaround is padding-invariant; OT behaves as a divergence."""

from __future__ import annotations

import pytest
import torch

from warmstart_speech.ctc_ot import OTConfig, ot_distance
from warmstart_speech.models import ModelConfig, SpeechEncoder, subsampled_lengths


@pytest.mark.parametrize("kind", ["transformer", "conformer"])
def test_speech_encoder_masks_padding(kind: str) -> None:
    """Real frames do not depend on how much padding follows (fairseq2's layout masks attention keys and,
    in conformer blocks, zeroes padded frames before the depthwise convolution)."""
    torch.manual_seed(0)
    cfg = ModelConfig(model_dim=32, ffn_dim=64, subsampler_dim=32, dropout=0.0, encoder=kind, conv_kernel=5)
    enc = SpeechEncoder(cfg, n_phonemes=10).eval()
    blocks = {type(layer).__name__ for layer in enc.encoder.layers}
    assert blocks == ({"ConformerBlock"} if kind == "conformer" else {"StandardTransformerEncoderLayer"})
    short = torch.randn(1, 37, 80)  # (1, T, C)
    other = torch.randn(1, 77, 80)
    pad_a = torch.cat([torch.cat([short, torch.zeros(1, 20, 80)], 1), other[:, :57]])  # (2, 57, C)
    pad_b = torch.cat([torch.cat([short, torch.zeros(1, 40, 80)], 1), other])  # (2, 77, C)
    with torch.no_grad():
        out_a, n_a = enc(pad_a, torch.tensor([37, 57]))
        out_b, n_b = enc(pad_b, torch.tensor([37, 77]))
    n = int(subsampled_lengths(torch.tensor([37]))[0])
    assert n == int(n_a[0]) == int(n_b[0]) == 10
    assert torch.allclose(out_a[0, :n], out_b[0, :n], atol=1e-5)
    assert not torch.allclose(out_a[1, :n], out_b[1, :n], atol=1e-3)  # the longer row really changed


def test_ot_distance_is_a_divergence_and_positions_favour_order() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 12, 8, generator=g)
    lens = torch.tensor([12, 9])
    cfg = OTConfig()
    same = ot_distance(x, lens, x, lens, cfg)
    other = ot_distance(x, lens, torch.randn(2, 12, 8, generator=g) + 2, lens, cfg)
    assert same.abs().max() < 1e-2 and (other > 1).all()
    reversed_x = x.flip(1)  # same set of points, opposite order
    assert ot_distance(x[:1], lens[:1], reversed_x[:1], lens[:1], cfg, positions=False).abs() < 1e-2
    ordered = ot_distance(x[:1], lens[:1], reversed_x[:1], lens[:1], cfg, positions=True)
    assert ordered > 0.1  # the authors' weight 1.0 position feature penalises the reversed order
    reference = OTConfig(backend="torch", iterations=200)  # the core's Sinkhorn, converged
    assert torch.allclose(
        ot_distance(x, lens, x + 0.5, lens, reference), ot_distance(x, lens, x + 0.5, lens, cfg), rtol=0.03
    )


def test_conformer_ctc_ot_pretraining_learns(corpus: dict) -> None:
    """CTC+OT pretraining of a conformer encoder lowers both losses on a fixed batch."""
    from warmstart.engine import quick_config
    from warmstart_speech.ctc_ot import PretrainModel, PretrainTask, text_encode
    from warmstart_speech.data import LengthBucketBatches
    from warmstart_speech.stages import fresh_encoder, load_corpus, train_mt

    data = load_corpus(corpus["train"])
    cfg = ModelConfig(
        model_dim=32, ffn_dim=64, subsampler_dim=32, encoder="conformer", conv_kernel=5, dropout=0.0
    )
    mt, _ = train_mt(data, cfg, quick_config(4, 8, 3e-3, warmup=0, log_every=10))
    encoder = fresh_encoder(cfg, len(data.src_vocab), 0)
    task = PretrainTask(PretrainModel(cfg, encoder, "ctc+ot", len(data.src_vocab), OTConfig()), mt)
    batch = next(iter(LengthBucketBatches(data.train, 8, seed=0)))
    with torch.no_grad():
        text = text_encode(mt, batch["src"], batch["src_lens"])
        before = task.model(batch, text)
    opt = torch.optim.Adam(encoder.parameters(), 3e-3)
    for _ in range(15):
        loss, _ = task.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = task.model(batch, text)
    assert after["ctc"] < before["ctc"] and after["ot"] < before["ot"]


def test_pretraining_with_loader_workers_equals_in_process(corpus: dict) -> None:
    """The same CTC pretraining with two loader workers reading the stored features ends with the same
    weights as in this process (same batches, same order)."""
    from warmstart.engine import quick_config
    from warmstart_speech.stages import load_corpus, pretrain_encoder

    data = load_corpus(corpus["train"])
    cfg = ModelConfig(model_dim=32, ffn_dim=64, subsampler_dim=32, dropout=0.0)
    weights = []
    for workers in (0, 2):
        engine = quick_config(8, 4, 3e-3, warmup=0)  # 8 steps over 6 buckets of 4: into a second epoch
        engine.train.num_workers = workers
        encoder, summary = pretrain_encoder(data, cfg, engine, "ctc")
        assert summary.steps == 8
        weights.append(encoder.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
