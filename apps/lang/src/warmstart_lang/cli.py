"""``warmstart-lang``: adapt an English-centric language model to a new language.

Seed papers: CW2V / convex-hull init (arXiv 2407.05841), Bailong (arXiv 2404.00862), RedWhale (arXiv
2408.11294), re-warming (arXiv 2308.04014), Beyond Cosine Decay (arXiv 2503.02844), the stability gap
(arXiv 2406.14833), MeCo (arXiv 2501.01956). This module is the thin CLI layer (LitGPT style: each
subcommand a typed function); the work is in ``tokenizer``, ``adapt``, ``data`` and ``bench``. It is the
only place that prints.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.engine import EngineConfig, cpu_threads
from warmstart.errors import ConfigError, DataError
from warmstart_lang.adapt import AdaptConfig
from warmstart_lang.bench import BenchConfig, WorldConfig
from warmstart_lang.growth import GrowConfig
from warmstart_lang.tokenizer import TokenizerKind

log = logging.getLogger(__name__)

app = App(
    "lang",
    "Adapt a language model to a new language: tokenizer extension, embedding init, continual pretraining",
)

InitMethod = Literal["random", "mean", "multivariate", "fvt", "convex", "cw2v"]
Files = list[Path] | Path
"""One path (a file or a folder) or a list of them: `--data a.txt` or `--data '[a.txt, b.jsonl]'`; a
`datasets` save_to_disk folder or a hub dataset name (`owner/name`, streamed) is read row by row."""


class _ProgressBar:
    """A rich progress bar fed by a ``progress(step, total, loss)`` callback (created on the first call)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.progress: object | None = None
        self.task: object | None = None

    def update(self, step: int, total: int, loss: float) -> None:
        from rich.progress import Progress

        if self.progress is None:
            self.progress = Progress(transient=True)
            self.progress.start()  # type: ignore[attr-defined]
            self.task = self.progress.add_task(self.what, total=total)  # type: ignore[attr-defined]
        self.progress.update(self.task, completed=step, description=f"{self.what} loss {loss:.3f}")  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()  # type: ignore[attr-defined]


def _launched_world() -> int:
    """Processes the launcher started (torchrun's WORLD_SIZE, srun's SLURM_NTASKS; 1 without one)."""
    env = os.environ
    return int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")))


def _one_process(run: RunContext | None, command: str) -> bool:
    """A one-process command under a launcher: rank 0 does the work and writes, the others return.

    (The training commands instead run on every rank and write only through rank 0, ``run.writer``.)
    """
    if run is None or run.writer:
        return True
    log.info("%s runs in one process: rank %d leaves it to rank 0", command, run.rank)
    return False


def _refuse_launcher(command: str) -> None:
    if _launched_world() > 1:
        raise ConfigError(
            f"lang {command} fits many small models in one process; run it without torchrun/srun "
            f"(this launch has {_launched_world()} processes)"
        )


def _paths(paths: Files) -> list[Path]:
    return [Path(p) for p in paths] if isinstance(paths, list) else [Path(paths)]


def _texts(paths: Files, limit: int | None, text_key: str = "text", split: str = "train") -> list[str]:
    from warmstart_lang.data import read_texts

    paths = _paths(paths)
    texts = read_texts(paths, limit=limit, text_key=text_key, split=split)
    if not texts:
        raise DataError(f"{paths[0]}: no non-empty document")
    return texts


@app.command
def synth(
    out: Path | None = None,
    n_source: int = 2000,
    n_target: int = 800,
    n_valid: int = 100,
    seed: int = 0,
    run: RunContext | None = None,
) -> None:
    """Write the generated source/target language pair as text files (for trying the other commands).

    Args:
        out: output folder (default: the run directory).
        n_source: source-language training documents.
        n_target: target-language training documents.
        n_valid: held-out documents per language.
        seed: generator seed.
    """
    from warmstart.cli.show import print_table
    from warmstart_lang.data import write_language_pair

    if not _one_process(run, "synth"):
        return
    run_dir, _ = run.open(out=out)
    paths = write_language_pair(run_dir, n_source=n_source, n_target=n_target, n_valid=n_valid, seed=seed)
    print_table("generated language pair", ("file", "path"), [(k, str(v)) for k, v in paths.items()])


@app.command(name="tokenizer-train")
def tokenizer_train(
    data: Files,
    out: Path,
    kind: TokenizerKind = "bpe",
    vocab_size: int = 1000,
    max_docs: int | None = None,
    text_key: str = "text",
    data_split: str = "train",
    run: RunContext | None = None,
) -> None:
    """Train a target-language tokenizer (HF tokenizers, BPE or Unigram) on text/JSONL files.

    Args:
        data: text (.txt, a document per line) or JSONL files, or folders of them.
        out: where to save the tokenizer (save_pretrained; written atomically).
        kind: bpe (byte-level) or unigram (Metaspace) for decoders; bert, roberta, xlm-roberta, deberta-v2
            or t5 for a tokenizer in that family's layout and special tokens.
        vocab_size: vocabulary size.
        max_docs: train on at most this many documents.
        text_key: JSONL field / dataset column with the text.
        data_split: the split of a dataset source.
    """
    from warmstart.cli.show import print_table
    from warmstart_lang.tokenizer import atomic_save, train_tokenizer

    if not _one_process(run, "tokenizer-train"):
        return
    tok = train_tokenizer(_texts(data, max_docs, text_key, data_split), kind, vocab_size)
    atomic_save(tok, out)
    print_table("tokenizer", ("", ""), [("kind", kind), ("vocabulary", str(len(tok))), ("saved", str(out))])


@app.command(name="tokenizer-extend")
def tokenizer_extend(
    base: str,
    data: Files,
    heldout: Files,
    out: Path,
    target_vocab_size: int = 1000,
    max_new_tokens: int | None = None,
    max_docs: int | None = None,
    text_key: str = "text",
    split_cjk: bool | None = None,
    run: RunContext | None = None,
) -> int:
    """Add the target tokens the base tokenizer lacks; report fertility and coverage before and after.

    Args:
        base: the base tokenizer (local directory or hub id).
        data: target-language training text (.txt / .jsonl files or folders).
        heldout: held-out target text for the fertility/coverage report.
        out: where to save the extended tokenizer (with fertility.json).
        target_vocab_size: vocabulary of the target tokenizer trained with the base's pipeline.
        max_new_tokens: add at most this many tokens (most frequent first).
        max_docs: train on at most this many documents.
        text_key: JSONL field with the text.
        split_cjk: false: turn off the base's per-character CJK split (BERT's BertNormalizer) in the extended
            tokenizer so multi-character CJK tokens can form (old ids kept); default: keep the base's, and
            warn with the measured effect when the held-out text is CJK.
    """
    from warmstart.cli.show import print_table
    from warmstart_lang.tokenizer import (
        atomic_save,
        cjk_share,
        extend_tokenizer,
        fertility,
        load_tokenizer,
        splits_cjk,
    )

    if not _one_process(run, "tokenizer-extend"):
        return 0
    base_tok = load_tokenizer(base)
    texts = _texts(data, max_docs, text_key)

    def extend(split: bool | None) -> tuple[object, list[str]]:
        return extend_tokenizer(
            base_tok,
            texts,
            target_vocab_size=target_vocab_size,
            max_new_tokens=max_new_tokens,
            split_cjk=split,
        )

    extended, added = extend(split_cjk)
    held = _texts(heldout, None, text_key)
    before, after = fertility(base_tok, held), fertility(extended, held)
    report = {
        "base": before.as_dict() | {"vocabulary": len(base_tok)},
        "extended": after.as_dict() | {"vocabulary": len(extended)},
        "added_tokens": len(added),
        "fertility_reduction": 1.0 - after.fertility / before.fertility,
    }
    share = cjk_share(held)
    if splits_cjk(base_tok) and split_cjk is None and share >= 0.1:
        alt, _ = extend(False)
        alt_fert = fertility(alt, held)
        report["cjk"] = {
            "share": share,
            "fertility_reduction_without_split": 1.0 - alt_fert.fertility / before.fertility,
        }
        cjk = report["cjk"]
        print(
            f"warning: {base}: {share:.0%} of the held-out characters are CJK and the base tokenizer's "
            f"BertNormalizer makes each one its own word, so no new token can join two: fertility "
            f"{before.fertility:.3f} -> {after.fertility:.3f} ({report['fertility_reduction']:.1%} fewer); "
            f"with --split_cjk false it is {alt_fert.fertility:.3f} "
            f"({cjk['fertility_reduction_without_split']:.1%} fewer; old ids kept)"
        )
    elif split_cjk is not None:
        report["cjk"] = {"share": share, "split_cjk": split_cjk}
    atomic_save(extended, out)
    (Path(out) / "fertility.json").write_text(json.dumps(report, indent=1))
    print_table(
        f"fertility on held-out target text ({before.words} words)",
        ("tokenizer", "vocabulary", "tokens/word", "single-token words", "unk rate"),
        [
            (
                name,
                str(r["vocabulary"]),
                f"{r['fertility']:.3f}",
                f"{r['coverage']:.1%}",
                f"{r['unk_rate']:.2%}",
            )
            for name, r in (("base", report["base"]), ("extended", report["extended"]))
        ],
    )
    print(f"{len(added)} tokens added; {report['fertility_reduction']:.1%} fewer tokens per word -> {out}")
    return 0


@app.command
def expand(
    model: str,
    tokenizer: str,
    out: Path,
    base_tokenizer: str | None = None,
    method: InitMethod = "fvt",
    head_method: InitMethod | None = None,
    data: Files | None = None,
    cw2v_steps: int | None = None,
    cw2v_seconds: float | None = 60.0,
    seed: int = 0,
    run: RunContext | None = None,
) -> None:
    """Resize a model (decoder, encoder or T5) to an extended tokenizer, initialising new embedding and head rows.

    Args:
        model: the source model (local directory or hub id).
        tokenizer: the extended tokenizer (from tokenizer-extend; every old token must keep its id).
        out: output directory (written atomically; loadable by the family's AutoModelFor*.from_pretrained).
        base_tokenizer: the model's own tokenizer (default: the one saved with the model).
        method: init of the new input-embedding rows: random, mean, multivariate, fvt (zip-tie), convex, cw2v.
        head_method: init of the new rows of an untied output head (default: the same as method).
        data: target text for cw2v.
        cw2v_steps: at most this many cw2v training steps (default: 3 epochs, stopped early when the loss on
            held-out pairs stops falling).
        cw2v_seconds: stop cw2v's training after this many seconds (a 30k + 8k vocabulary then expands in
            under 2 minutes on 2 CPU cores; None: no limit).
        seed: seed of the random inits.
    """
    from warmstart.cli.show import print_table
    from warmstart.init import CW2VConfig
    from warmstart_lang.adapt import expand_model, save_model
    from warmstart_lang.families import family_of
    from warmstart_lang.models import load_model
    from warmstart_lang.tokenizer import load_tokenizer

    if not _one_process(run, "expand"):
        return
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} already exists and is not empty; choose another --out")
    new_tok = load_tokenizer(tokenizer)
    old_tok = load_tokenizer(base_tokenizer or model)
    texts = _texts(data, 2000) if data else None
    net = load_model(model)
    family = family_of(net)
    bar = _ProgressBar("cw2v") if "cw2v" in (method, head_method) else None
    info = expand_model(
        net,
        old_tok,
        new_tok,
        method=method,
        head_method=head_method,
        seed=seed,
        texts=texts,
        where=f"expand {model}",
        base_name=model,
        cw2v=CW2VConfig(max_steps=cw2v_steps, max_seconds=cw2v_seconds),
        progress=bar.update if bar else None,
    )
    if bar:
        bar.close()
    save_model(net, new_tok, out, extra=info)
    fallback = {
        "fvt": f"{info['fvt_fallback_rate']:.1%} of new tokens have no old pieces (mean row)",
        "cw2v": f"{info['cw2v_unseen_rate']:.1%} of new tokens never occur in --data (~mean row)",
        "convex": "none (random convex weights over old rows)",
    }
    if "cw2v" in (method, head_method):
        held = info["cw2v_heldout"]
        trace = f"held-out pair loss {held[0][1]:.3f} -> {held[-1][1]:.3f}" if held else "no held-out pairs"
        fallback["cw2v"] += f"; {info['cw2v_steps_run']} steps, {info['cw2v_stopped']}, {trace}"
    print_table(
        "vocabulary expansion",
        ("", ""),
        [
            ("family", f"{family.name} ({type(net).__name__}, {family.auto_class})"),
            ("rows", f"{info['old_rows']} -> {info['new_rows']}"),
            ("new tokens", str(len(info["new_token_ids"]))),
            ("embeddings init", info["method"]),
            ("head init", str(info["head_method"] or "tied")),
            *((f"{m} fallback", fallback[m]) for m in dict.fromkeys((method, head_method)) if m in fallback),
            ("saved", str(out)),
        ],
    )


@app.command
def pretrain(
    model: str,
    data: Files,
    eval_data: Files,
    tokenizer: str | None = None,
    replay: Files | None = None,
    source_eval: Files | None = None,
    adapt: AdaptConfig = AdaptConfig(),
    engine: EngineConfig = EngineConfig(),
    resume: str | None = None,
    out: Path | None = None,
    data_column: str | None = None,
    data_split: str = "train",
    run: RunContext | None = None,
) -> int:
    """Continual pretraining on target text: full / LoRA / QLoRA, staged, with replay, any schedule, MeCo.

    Args:
        model: the (expanded) model: local directory or hub id.
        data: target-language training text (.txt / .jsonl files or folders), streamed.
        eval_data: held-out target text (perplexity).
        tokenizer: the tokenizer (default: the one saved with the model).
        replay: source-language text replayed at adapt.replay_ratio.
        source_eval: held-out source text (forgetting).
        adapt: mode, staged training, replay, MeCo, LoRA rank, block size.
        engine: steps, batch, optimizer, schedule (cosine|rewarm|infinite|wsd), checkpoints.
        resume: 'latest', a run directory or a checkpoints/step-N directory.
        out: run directory (default: runs/lang/pretrain/<time>); the model is saved in <out>/model.
        data_column: the text column of a dataset source / field of a JSONL file (default: adapt.text_key,
            'text').
        data_split: the split of a dataset source (hub name or save_to_disk DatasetDict).
    """
    import torch

    from warmstart.cli.show import print_summary, print_table
    from warmstart.engine.checkpoint import full_state_dict
    from warmstart_lang.adapt import EXPANSION_FILE, continual_pretrain, load_qlora_model, save_model
    from warmstart_lang.data import resolve_files
    from warmstart_lang.families import detect_family
    from warmstart_lang.models import check_tokenizer_fits, load_config, load_model
    from warmstart_lang.tokenizer import load_tokenizer

    if adapt.mode == "qlora" and not torch.cuda.is_available():
        raise ConfigError(
            "adapt.mode=qlora needs a CUDA GPU (bitsandbytes 4-bit); use --adapt.mode lora on CPU"
        )
    if data_column is not None:
        adapt.text_key = data_column
    files = resolve_files(_paths(data), "training", data_split)
    replay_files = resolve_files(_paths(replay), "replay", data_split) if replay else []
    tok = load_tokenizer(tokenizer or model)
    run_dir, checkpoint = run.open(resume=resume, out=out)
    expansion = Path(model) / EXPANSION_FILE
    new_ids = json.loads(expansion.read_text())["new_token_ids"] if expansion.is_file() else None
    family = detect_family(load_config(model), model)
    if adapt.mode == "qlora" and family.name != "decoder":
        raise ConfigError(f"adapt.mode=qlora loads causal LMs only; {model} is an {family.name}: use lora")
    net = load_qlora_model(model, adapt, new_ids) if adapt.mode == "qlora" else load_model(model)
    check_tokenizer_fits(net, tok, f"pretrain {model}")
    result = continual_pretrain(
        net,
        tok,
        files,
        engine=engine,
        adapt=adapt,
        target_eval_texts=_texts(eval_data, 500, adapt.text_key, data_split),
        source_eval_texts=_texts(source_eval, 500, adapt.text_key, data_split) if source_eval else (),
        replay_files=replay_files,
        new_token_ids=new_ids,
        run_dir=run_dir,
        resume_from=checkpoint,
    )
    whole = full_state_dict(result.model)  # under FSDP every rank takes part in gathering the shards
    if run.writer:  # every rank holds the same (or, under FSDP, a shard of the) weights; rank 0 saves them
        save_model(result.model, tok, run_dir / "model", replace=checkpoint is not None, state_dict=whole)
    print_summary(result.summaries[-1], "continual pretraining")
    rows = [("family", f"{family.name}: {family.objective}; target_ppl = {family.metric}")]
    rows += [(k, f"{v:.4g}") for k, v in result.final.items()]
    rows += [("tokens/s", f"{result.tokens_per_s:.0f}"), ("trainable params", str(result.trainable_params))]
    rows += [("model", str(run_dir / "model"))]
    print_table("result", ("", ""), rows)
    return 0


@app.command(name="grow")
def grow_command(
    model: str,
    grow: GrowConfig = GrowConfig(),
    data: Files | None = None,
    eval_data: Files | None = None,
    tokenizer: str | None = None,
    adapt: AdaptConfig = AdaptConfig(),
    engine: EngineConfig = EngineConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> int:
    """Grow a trained model into a bigger one (bert2BERT FPI/AKI or learngene), then train it in two stages.

    Args:
        model: the small pretrained model (local directory or hub id).
        grow: method (fpi / aki / learngene), target width and depth, first-stage steps.
        data: training text for the two-stage training (none: grow and save only).
        eval_data: held-out text (the family's metric before and after).
        tokenizer: default: the one saved with the model.
        adapt: block size, replay, MeCo, ... of the training (as in pretrain).
        engine: steps (both stages together), batch, optimizer, schedule.
        out: run directory (default: runs/lang/grow/<time>); the grown model is saved in <out>/model.
    """
    from warmstart.cli.show import print_table
    from warmstart.init import output_drift
    from warmstart_lang.adapt import continual_pretrain, family_eval_batches, save_model
    from warmstart_lang.data import resolve_files
    from warmstart_lang.families import family_of, family_perplexity
    from warmstart_lang.growth import grow_model, submodel_depths
    from warmstart_lang.models import load_model
    from warmstart_lang.tokenizer import load_tokenizer

    if data is not None and eval_data is None:
        raise ConfigError("grow --data needs --eval_data (held-out text for the before/after metric)")
    files = resolve_files(_paths(data), "training") if data is not None else []
    small = load_model(model)
    family = family_of(small)
    tok = load_tokenizer(tokenizer or model)
    run_dir, _ = run.open(out=out)
    big, info = grow_model(small, grow, f"grow {model}")
    rows = [("family", f"{family.name} ({type(big).__name__})"), ("method", grow.method)]
    rows += [(k, f"{a} -> {b}") for k, (a, b) in ((k, info[k]) for k in ("width", "depth", "params"))]
    if eval_data is not None:
        texts = _texts(eval_data, 500, adapt.text_key)
        batches = family_eval_batches(tok, texts, family, adapt.block_size, adapt.eval_blocks)
        before = family_perplexity(small, batches, family)["perplexity"]
        grown_ppl = family_perplexity(big, batches, family)["perplexity"]
        drift = output_drift(small.eval(), big.eval(), [b["input_ids"] for b in batches[:2]])
        info |= {"small_ppl": before, "grown_ppl": grown_ppl, "drift_max_rel": drift["max_rel"]}
        rows += [(f"{family.metric}: small / grown", f"{before:.4g} / {grown_ppl:.4g}")]
        rows += [("output drift (max rel.)", f"{drift['max_rel']:.2e}")]
    if files:
        depths = submodel_depths(info["depth"][0], info["depth"][1])
        result = continual_pretrain(
            big,
            tok,
            files,
            engine=engine,
            adapt=adapt,
            target_eval_texts=texts,
            run_dir=run_dir,
            submodel_steps=grow.stage1_steps,
            submodel_depths=depths,
        )
        big = result.model
        info["trained_ppl"] = result.final["target_ppl"]
        info["history"] = result.history
        rows += [
            (
                f"after {engine.train.max_steps} steps ({grow.stage1_steps} sub-model)",
                f"{result.final['target_ppl']:.4g}",
            )
        ]
    if run.writer:
        save_model(big, tok, run_dir / "model", extra=info, extra_name="warmstart_growth.json")
    rows += [("saved", str(run_dir / "model"))]
    print_table("model growth", ("", ""), rows)
    return 0


@app.command(name="eval")
def evaluate(
    model: str,
    target: Files,
    source: Files | None = None,
    tokenizer: str | None = None,
    block_size: int = 64,
    max_blocks: int = 64,
    text_key: str = "text",
    out: Path | None = None,
    run: RunContext | None = None,
) -> int:
    """Perplexity in the family's metric on target and source text (forgetting), fertility, throughput.

    Decoders: perplexity; encoders: masked-token perplexity (a fixed 15 % mask) and pseudo-perplexity;
    T5-style models: span-corruption perplexity (a fixed corruption).

    Args:
        model: local directory or hub id.
        target: held-out target-language text.
        source: held-out source-language text (forgetting).
        tokenizer: default: the one saved with the model.
        block_size: tokens per evaluation block.
        max_blocks: evaluate at most this many blocks per language.
        text_key: JSONL field with the text.
        out: write the numbers as JSON to this file.
    """
    from warmstart.cli.show import print_table
    from warmstart_lang.adapt import evaluate_model
    from warmstart_lang.families import family_of
    from warmstart_lang.models import check_tokenizer_fits, load_model
    from warmstart_lang.tokenizer import load_tokenizer

    if not _one_process(run, "eval"):
        return 0
    net = load_model(model)
    family = family_of(net)
    tok = load_tokenizer(tokenizer or model)
    check_tokenizer_fits(net, tok, f"eval {model}")
    net.eval()
    result = evaluate_model(
        net,
        tok,
        _texts(target, 500, text_key),
        _texts(source, 500, text_key) if source else (),
        block_size=block_size,
        max_blocks=max_blocks,
    )
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result | {"family": family.name, "metric": family.metric}, indent=1))
    print_table(
        f"eval {model} ({family.name}; target_ppl = {family.metric})",
        ("metric", "value"),
        [(k, f"{v:.4g}") for k, v in result.items()],
    )
    return 0


@app.command(demo=True)
def demo(out: Path | None = None, steps: int = 40, run: RunContext | None = None) -> DemoResult:
    """The whole path on generated data: source model -> extended tokenizer -> fvt expansion -> staged pretraining.

    Args:
        out: run directory (default: runs/lang/demo/<time>).
        steps: continual-pretraining steps.
    """
    _refuse_launcher("demo")
    run_dir, _ = run.open(out=out)
    with cpu_threads():
        return _demo(run_dir, steps)


def _demo(run_dir: Path, steps: int) -> DemoResult:
    from warmstart.cli.show import print_table
    from warmstart.engine import quick_config
    from warmstart_lang.adapt import continual_pretrain, expand_model, save_model
    from warmstart_lang.bench import QUIET_LOG_EVERY, prepare_world
    from warmstart_lang.data import read_texts
    from warmstart_lang.models import load_model
    from warmstart_lang.tokenizer import load_tokenizer

    world = prepare_world(run_dir / "world", WorldConfig(n_source=1000, n_target=300, source_steps=80))
    base, extended = load_tokenizer(world.base_tokenizer), load_tokenizer(world.extended_tokenizer)
    model = load_model(world.source_model)
    info = expand_model(model, base, extended, method="fvt")
    cfg = quick_config(steps, 8, 2e-3, log_every=QUIET_LOG_EVERY)  # warmup: a tenth of the steps
    result = continual_pretrain(
        model,
        extended,
        [world.data["target_train"]],
        engine=cfg,
        adapt=AdaptConfig(embed_steps=steps // 4, replay_ratio=0.2, eval_blocks=8),
        target_eval_texts=read_texts([world.data["target_valid"]]),
        source_eval_texts=read_texts([world.data["source_valid"]]),
        replay_files=[world.data["source_train"]],
        new_token_ids=info["new_token_ids"],
    )
    save_model(result.model, extended, run_dir / "model", extra=info)
    before, after = result.history[0][1], result.final
    print_table(
        "lang demo",
        ("", "before", "after"),
        [
            ("target tokens/word", f"{world.fertility_base:.2f}", f"{world.fertility_extended:.2f}"),
            ("target perplexity", f"{before['target_ppl']:.2f}", f"{after['target_ppl']:.2f}"),
            ("source perplexity", f"{before['source_ppl']:.2f}", f"{after['source_ppl']:.2f}"),
        ],
    )
    return DemoResult(
        what=f"tiny Llama: source LM -> +{len(info['new_token_ids'])} target tokens (fvt) -> {steps} staged steps",
        metric="target perplexity",
        value=float(after["target_ppl"]),
        details={
            "target_ppl_before": before["target_ppl"],
            "source_ppl_after": after["source_ppl"],
            "fertility_base": world.fertility_base,
            "fertility_extended": world.fertility_extended,
            "run_dir": str(run_dir),
        },
    )


@app.command
def bench(
    kind: Literal["init", "throughput"] = "init",
    settings: BenchConfig = BenchConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> int:
    """The seed comparison in miniature (init methods vs random vs scratch, schedules) or the throughput ratio.

    Args:
        kind: init (methods x seeds, plus schedules; report.md/plot.png/results.json) or throughput
            (tokens/s vs the transformers Trainer on the same model and data).
        settings: methods, schedules, seeds, steps, the generated languages and source model.
        out: run directory (default: runs/lang/bench/<time>).
    """
    from warmstart.cli.show import print_table
    from warmstart_lang.bench import run_bench, throughput_vs_trainer

    _refuse_launcher("bench")
    run_dir, _ = run.open(out=out)
    if kind == "throughput":
        with cpu_threads():
            r = throughput_vs_trainer(
                run_dir, steps=settings.steps, batch_size=settings.batch_size, world=settings.world
            )
        (run_dir / "throughput.json").write_text(json.dumps(r, indent=1))
        print_table(
            "continual pretraining throughput (CPU)",
            ("", "tokens/s"),
            [(k, f"{v:.3g}") for k, v in r.items()],
        )
        return 0
    result = run_bench(run_dir, settings)
    headline = result["reports"]["init"].get("headline", {})
    if headline:
        rows = [
            (
                m,
                "never" if h["mean_steps"] is None else f"{h['mean_steps']:.1f} / {settings.steps}",
                f"{h['seeds_reaching']}",
            )
            for m, h in headline.items()
            if isinstance(h, dict)
        ]
        print_table(
            f"target-language steps to reach scratch's final perplexity ({headline['scratch_final_target_ppl']:.3g})",
            ("method", "steps (mean)", "seeds reaching"),
            rows,
        )
    for name in ("growth", "meco"):
        if name in result["reports"]:
            print(f"{name}: {json.dumps(result['reports'][name]['headline'], default=str)}")
    for name, summary in result["reports"].items():
        rows = []
        for m, s in summary["methods"].items():
            rows.append(
                (m, f"{s['mean']:.3f} ± {s['std']:.3f}", f"{s.get('relative_delta', 0.0) or 0.0:+.1%}")
            )
        print_table(
            f"{name}: {summary['metric']} ({run_dir / name / 'report.md'})",
            ("method", "mean ± std", "vs baseline"),
            rows,
        )
    return 0


def main() -> None:
    app.entry()


if __name__ == "__main__":
    main()
