"""LoRA / PiSSA / QLoRA through peft: new-token rows train alone next to LoRA, PiSSA preserves outputs."""

from __future__ import annotations

import pytest
import torch

from warmstart.peft import QLoRAUnavailableError, apply_lora, load_qlora, merge_lora, qlora_available

transformers = pytest.importorskip("transformers")

OLD_VOCAB, NEW_VOCAB = 28, 32
NEW_IDS = list(range(OLD_VOCAB, NEW_VOCAB))


def tiny_llama(tied: bool, vocab: int = NEW_VOCAB, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=tied,
    )
    return transformers.LlamaForCausalLM(config).eval()


def batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, NEW_VOCAB, (4, 12), generator=g)  # (B, T)
    ids[:, ::3] = torch.tensor(NEW_IDS).repeat(4, 1)[:, : ids[:, ::3].shape[1]]  # make sure new ids occur
    return ids


@pytest.mark.parametrize("tied", [False, True])
def test_trainable_token_indices_train_only_new_rows(tied):
    model = tiny_llama(tied)
    base_emb = model.get_input_embeddings().weight.detach().clone()
    base_head = model.get_output_embeddings().weight.detach().clone()
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    pm = apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "v_proj"], trainable_token_indices=NEW_IDS)

    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    lora_b = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_B" in n}

    all_ids = torch.arange(NEW_VOCAB)
    emb_before = pm.get_input_embeddings()(all_ids).detach().clone()  # (V, D) effective rows
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    pm.train()
    for step in range(2):
        ids = batch(step)
        loss = pm(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    pm.eval()

    emb_after = pm.get_input_embeddings()(all_ids).detach()
    changed = (emb_after - emb_before).abs().amax(dim=1) > 0  # (V,)
    assert changed.tolist() == [i in NEW_IDS for i in range(NEW_VOCAB)]  # exactly the new rows moved
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            assert not torch.equal(p, lora_b[n]), n  # LoRA trained
    base = pm.get_base_model()
    torch.testing.assert_close(
        base.model.layers[0].self_attn.q_proj.base_layer.weight, q_before, rtol=0, atol=0
    )

    merged = merge_lora(pm)
    emb_merged = merged.get_input_embeddings().weight.detach()
    torch.testing.assert_close(
        emb_merged[:OLD_VOCAB], base_emb[:OLD_VOCAB], rtol=0, atol=0
    )  # old rows intact
    assert not torch.allclose(emb_merged[OLD_VOCAB:], base_emb[OLD_VOCAB:])
    head_merged = merged.get_output_embeddings().weight.detach()
    torch.testing.assert_close(head_merged[:OLD_VOCAB], base_head[:OLD_VOCAB], rtol=0, atol=0)
    # the new output rows train too: through the tie, or (untied) through the head's own token adapter
    assert not torch.allclose(head_merged[OLD_VOCAB:], base_head[OLD_VOCAB:])


def test_pissa_starts_at_the_base_function():
    model = tiny_llama(tied=False)
    ids = batch(7)
    with torch.no_grad():
        reference = model(input_ids=ids).logits.clone()
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    pm = apply_lora(model, r=4, alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init="pissa")
    with torch.no_grad():
        adapted = pm(input_ids=ids).logits
    torch.testing.assert_close(adapted, reference, rtol=1e-5, atol=1e-5)
    # PiSSA moved the principal part into the adapter: the frozen base is now the residual
    q = pm.get_base_model().model.layers[0].self_attn.q_proj
    assert not torch.allclose(q.base_layer.weight, q_before, atol=1e-3)
    lora_a = q.lora_A["default"].weight
    assert lora_a.abs().sum() > 0 and q.lora_B["default"].weight.abs().sum() > 0


def test_default_lora_is_a_noop_at_init_and_freezes_the_base():
    model = tiny_llama(tied=True)
    ids = batch(3)
    with torch.no_grad():
        reference = model(input_ids=ids).logits.clone()
    pm = apply_lora(model, r=2, target_modules="all-linear")
    with torch.no_grad():
        torch.testing.assert_close(pm(input_ids=ids).logits, reference, rtol=0, atol=0)
    frozen = [n for n, p in pm.named_parameters() if not p.requires_grad]
    assert any("embed_tokens" in n for n in frozen)
    assert all("lora_" in n for n, p in pm.named_parameters() if p.requires_grad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_qlora_on_cpu_raises_a_clear_error(tmp_path):
    assert not qlora_available()
    with pytest.raises(QLoRAUnavailableError, match="CUDA") as info:
        load_qlora(tmp_path, r=4)
    assert isinstance(info.value, RuntimeError)
    assert "LoRA" in str(info.value)  # names the fix


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA (bitsandbytes 4-bit) needs CUDA")
def test_qlora_trains_lora_on_a_4bit_base(tmp_path):
    import bitsandbytes as bnb

    tiny_llama(tied=False).save_pretrained(tmp_path)
    pm = load_qlora(tmp_path, r=4, alpha=8, target_modules=["q_proj", "v_proj"], gradient_checkpointing=False)
    quantized = [m for m in pm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized
    before = {n: p.detach().clone() for n, p in pm.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    ids = batch(0).cuda()
    pm.train()
    for _ in range(2):
        pm(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    assert any(not torch.equal(p, before[n]) for n, p in pm.named_parameters() if n in before)
