"""``warmstart-rl``: pretraining for control on gymnasium in one CLI — collect, idm-train, idm-label, bc,
finetune (VPT: SB3 PPO from the BC weights, KL to the pretrained policy), worldmodel-pretrain and
worldmodel-finetune (ContextWM), robofume (offline Cal-QL + learned success reward), l2m (modulator pool on
a frozen policy vs full fine-tuning), lm-policy (policy from a pretrained LM), demo, bench, throughput.

Seeds: *Video PreTraining (VPT)* (arXiv 2206.11795), *Pre-training Contextualized World Models with
In-the-wild Videos for RL* (ContextWM, arXiv 2305.18499), *Robot Fine-Tuning Made Easy* (RoboFuME, arXiv
2310.15145), *Learning to Modulate pre-trained Models in RL* (L2M, arXiv 2306.14884), *Pre-Trained
Language Models for Interactive Decision-Making* (LID, arXiv 2202.01771). The CLI is thin: it parses typed
configs and calls :mod:`warmstart_rl.vpt`, :mod:`warmstart_rl.contextwm`, :mod:`warmstart_rl.robofume`,
:mod:`warmstart_rl.l2m`, :mod:`warmstart_rl.lmpolicy` and :mod:`warmstart_rl.bench`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from warmstart.cli import App, DemoResult, RunContext
from warmstart.cli.show import print_table
from warmstart.engine import EngineConfig
from warmstart_rl.bench import BenchConfig
from warmstart_rl.bench_robofume import RoboFuMEBenchConfig
from warmstart_rl.bench_worldmodel import WorldModelBenchConfig
from warmstart_rl.contextwm import AgentConfig, WorldModelConfig
from warmstart_rl.data import EnvConfig, OnBadFile
from warmstart_rl.idmrepr import ReprConfig
from warmstart_rl.l2m import L2MConfig
from warmstart_rl.lmpolicy import LMPolicyConfig
from warmstart_rl.plots import log_return_curve
from warmstart_rl.robofume import RoboFuMEConfig

app = App("rl", "Pretraining for control on gymnasium: VPT, ContextWM world models, RoboFuME")


def _engine_default(steps: int = 300, batch: int = 64, lr: float = 1e-3) -> EngineConfig:
    cfg = EngineConfig()
    cfg.train.max_steps = steps
    cfg.train.micro_batch_size = batch
    cfg.optimizer.lr = lr
    cfg.logging.tensorboard = False
    cfg.checkpoint.save_final = False
    cfg.logging.log_every = 50
    return cfg


def _rows(metrics: dict) -> list[tuple[str, str]]:
    return [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]


@app.command
def collect(
    env: EnvConfig = EnvConfig(),
    episodes: int = 200,
    labelled: int = 20,
    policy: str = "scripted",
    noise: float = 0.2,
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Roll out a policy and record a corpus: unlabelled videos plus a small action-labelled subset.

    Args:
        env: the gymnasium environment (pixel observations, discrete actions).
        episodes: episodes to record in all.
        labelled: how many of them keep their actions (the rest are frames only).
        policy: 'scripted' (expert + noise), 'random', or the path of an SB3 PPO checkpoint .zip.
        noise: probability of a uniformly random action instead of the scripted expert's.
        seed: seed of the environment resets and the noise.
        out: corpus directory (default: a new run directory).
    """
    from warmstart_rl.data import collect as record

    run_dir, _ = run.open(out=out)
    summary = record(run_dir, env, episodes, labelled, policy, noise, seed)
    print_table(f"corpus {run_dir}", ("", ""), _rows(summary))


@dataclass
class IDMOptions:
    context: int = 1
    """Frames on each side of the transition the IDM sees (window 2k + 2)."""
    heldout_fraction: float = 0.2
    """Share of labelled episodes held out for the accuracy figure."""
    diff: bool = True
    """Stack the window's frame differences (motion) with its frames."""
    channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    """Conv widths of the IDM's encoder."""
    first_stride: int | None = None
    """Stride of its first conv (null: 2 for frames of 48 px and more, else 1)."""
    gate_margin: float = 0.1
    """Quality gate: held-out accuracy must beat chance by this much, else idm-label refuses."""
    max_rounds: int = 3
    """Rounds of --engine.train.max_steps to train at most, stopping once the gate is cleared."""


@app.command(name="idm-train")
def idm_train(
    data: Path,
    idm: IDMOptions = IDMOptions(),
    engine: EngineConfig = _engine_default(),
    on_bad_file: OnBadFile = "error",
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Train VPT's non-causal inverse-dynamics model on the labelled episodes until it clears the quality
    gate (held-out accuracy over chance by a margin) or runs out of rounds; the last line says which.

    Args:
        data: a corpus directory written by `collect`.
        idm: IDM window, architecture, held-out split and quality gate.
        engine: training loop settings (steps per round, batch, optimizer, devices).
        on_bad_file: an unreadable episode file: 'error' (one line naming it) or 'skip' (counted).
        out: run directory (default: runs/rl/idm-train/<time>); the model goes to <out>/idm/.
    """
    from warmstart_rl.data import load_corpus
    from warmstart_rl.models import EncoderConfig, IDMConfig
    from warmstart_rl.vpt import IDMTrainConfig, idm_gate, train_idm

    corpus = load_corpus(data, on_bad_file)
    size = int(corpus.meta["frame_shape"][0])
    stride = idm.first_stride if idm.first_stride is not None else (2 if size >= 48 else 1)
    model = IDMConfig(
        encoder=EncoderConfig(list(idm.channels), first_stride=stride), context=idm.context, diff=idm.diff
    )
    run_dir, _ = run.open(out=out)
    config = IDMTrainConfig(model, idm.heldout_fraction, idm.gate_margin, idm.max_rounds)
    _, metrics = train_idm(corpus, config, engine, run_dir)
    metrics["skipped files"] = corpus.meta["skipped_files"]
    print_table(f"IDM -> {run_dir / 'idm'}", ("", ""), _rows(metrics))
    print(idm_gate(metrics, corpus.n_actions, idm.gate_margin)["line"])


@app.command(name="idm-label")
def idm_label(data: Path, model: Path, force: bool = False, on_bad_file: OnBadFile = "error") -> None:
    """Pseudo-label the corpus' unlabelled videos with a trained IDM (writes <data>/pseudo/); an IDM that
    failed its quality gate is refused (one line with its accuracy and chance) unless --force.

    Args:
        data: a corpus directory written by `collect`.
        model: an `idm-train` run directory (or its idm/ folder).
        force: label even with an IDM at chance (its labels are then noise).
        on_bad_file: an unreadable episode file: 'error' (one line naming it) or 'skip' (counted).
    """
    from warmstart.errors import CheckpointError
    from warmstart_rl.data import load_corpus
    from warmstart_rl.vpt import check_idm_gate, label_corpus, load_idm

    corpus = load_corpus(data, on_bad_file)
    idm, spec = load_idm(model)
    if list(spec["frame_shape"]) != list(corpus.meta["frame_shape"]) or spec["n_actions"] != corpus.n_actions:
        raise CheckpointError(
            f"--model {model}: IDM trained on frames {spec['frame_shape']} / {spec['n_actions']} actions, "
            f"corpus {data} has {corpus.meta['frame_shape']} / {corpus.n_actions}; train an IDM on this corpus"
        )
    gate = check_idm_gate(spec, model, force)
    metrics = label_corpus(corpus, idm)
    print_table(f"pseudo-labels -> {Path(data) / 'pseudo'}", ("", ""), _rows(metrics))
    print(gate["line"] + ("" if gate["passed"] else " (labelled anyway: --force true)"))


@dataclass
class BCOptions:
    labels: str = "pseudo"
    """'pseudo': labelled + IDM-labelled videos (VPT); 'labelled': labelled episodes only."""
    heldout_fraction: float = 0.2
    """Share of labelled episodes held out for the accuracy figure."""
    eval_episodes: int = 10
    """Greedy episodes in the environment to measure the cloned policy's return."""
    frame_stack: int | None = None
    """The policy sees the last k frames (a causal stack); null: the env family's default (ALE 4, others 1)."""
    class_balance: bool = False
    """Inverse-frequency class weights in the loss (a rare decisive action such as Breakout's FIRE)."""
    frame_diff: bool = False
    """With a frame stack, also feed the differences of consecutive frames (what made Breakout's BC learn)."""


@app.command
def bc(
    data: Path,
    options: BCOptions = BCOptions(),
    engine: EngineConfig = _engine_default(),
    on_bad_file: OnBadFile = "error",
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Behaviour-clone the causal foundation policy on true + pseudo labels.

    Args:
        data: a corpus directory (after `idm-label` when labels = pseudo).
        options: label source, held-out split, evaluation episodes.
        engine: training loop settings.
        on_bad_file: an unreadable episode file: 'error' (one line naming it) or 'skip' (counted).
        out: run directory; the policy goes to <out>/policy/ (safetensors + config.json).
    """
    from warmstart_rl.data import load_corpus
    from warmstart_rl.models import EncoderConfig, PolicyConfig
    from warmstart_rl.vpt import BCConfig, train_bc

    corpus = load_corpus(data, on_bad_file)
    run_dir, _ = run.open(out=out)
    config = BCConfig(
        model=PolicyConfig(EncoderConfig(frame_diff=options.frame_diff), frame_stack=options.frame_stack),
        labels=options.labels,
        heldout_fraction=options.heldout_fraction,
        eval_episodes=options.eval_episodes,
        class_balance=options.class_balance,
    )
    _, metrics = train_bc(corpus, config, engine, run_dir, seed=engine.train.seed)
    print_table(f"BC policy -> {run_dir / 'policy'}", ("", ""), _rows(metrics))


@dataclass
class PPOOptions:
    total_steps: int = 8192
    """Environment steps."""
    n_envs: int = 4
    """Parallel environments."""
    n_steps: int = 64
    """Rollout length per environment between updates."""
    lr: float = 3e-4
    """Adam learning rate."""
    ent_coef: float = 0.01
    """Entropy bonus."""
    kl_coef: float = 0.1
    """VPT's KL(pi_pretrained || pi) coefficient (ignored from scratch; 0 disables)."""
    kl_decay: float = 0.995
    """Decay of the KL coefficient per PPO epoch."""

    def to_config(self):
        from warmstart_rl.vpt import PPOConfig

        return PPOConfig(
            total_steps=self.total_steps,
            n_envs=self.n_envs,
            n_steps=self.n_steps,
            lr=self.lr,
            ent_coef=self.ent_coef,
            kl_coef=self.kl_coef,
            kl_decay=self.kl_decay,
        )


@app.command
def finetune(
    policy: Path | None = None,
    env: EnvConfig | None = None,
    ppo: PPOOptions = PPOOptions(),
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """PPO (stable-baselines3) from the BC policy, with VPT's KL to the pretrained policy; no --policy: scratch.

    Args:
        policy: a `bc` run directory (or its policy/ folder); omit to train PPO from scratch.
        env: the environment (default: the one the policy was cloned on).
        ppo: PPO budget and hyperparameters (kl_coef > 0 adds the KL-to-pretrained loss).
        seed: seed of PPO and the environments.
        out: run directory; the SB3 model is saved as <out>/ppo.zip, the return curve as curve.json.
    """
    from warmstart_rl.models import EncoderConfig, PolicyConfig
    from warmstart_rl.vpt import finetune_ppo, load_policy

    init, policy_config = None, PolicyConfig()
    if policy is not None:
        init, spec = load_policy(policy)
        model = spec["model"]
        policy_config = PolicyConfig(
            EncoderConfig(**model["encoder"]), list(model["value_hidden"]), model.get("frame_stack")
        )
        env = env or EnvConfig(**spec["env"])
    env = env or EnvConfig()
    run_dir, _ = run.open(out=out)
    result = finetune_ppo(env, ppo.to_config(), policy_config, init, seed=seed, save_to=run_dir / "ppo.zip")
    (run_dir / "curve.json").write_text(json.dumps(result["curve"]))
    log_return_curve(run_dir, result["curve"], f"PPO on {env.env_id}")
    rows = [
        ("init", str(policy) if policy is not None else "scratch"),
        ("env steps", str(result["steps"])),
        ("env steps/s", f"{result['steps_per_s']:.0f}"),
        ("episodes", str(len(result["curve"]))),
        ("mean return (last 20 episodes)", f"{result['final_return']:.3f}"),
        ("SB3 model", str(run_dir / "ppo.zip")),
    ]
    print_table("PPO fine-tuning", ("", ""), rows)
    if result["start_check"] is not None:
        (run_dir / "start_check.json").write_text(json.dumps(result["start_check"], indent=1))
        print(("warning: " if result["start_check"]["below_random"] else "") + result["start_check"]["line"])


@dataclass
class PretrainOptions:
    clip_length: int = 16
    """Frames per training clip."""
    heldout_fraction: float = 0.1
    """Share of the videos held out for the reconstruction figure."""


@app.command(name="worldmodel-pretrain")
def worldmodel_pretrain(
    data: Path | None = None,
    videos: list[Path] | None = None,
    size: int | None = None,
    model: WorldModelConfig = WorldModelConfig(),
    options: PretrainOptions = PretrainOptions(),
    engine: EngineConfig = _engine_default(steps=300, batch=16),
    on_bad_file: OnBadFile = "error",
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """ContextWM: action-free pretraining of a contextualized world model on videos (frames only) of this
    or any other environments, resized to the target's frame size.

    Args:
        data: a corpus written by `collect` (same-environment videos; actions are not read).
        videos: folders of episodes from any environments, as a list (`--videos '[dir1, dir2]'`): `collect`
            corpora, folders of .npz files with a `frames` array (T, H, W, 3) uint8 and/or plain video files
            (.mp4, .avi, .webm, .mkv, .mov, .gif, decoded with PyAV), or video files themselves; any or no
            action space.
        size: the target's frame side every video is resized to (default: --data's, else the first video's).
        model: world-model architecture (context encoder on/off, state sizes).
        options: clip length and held-out split.
        engine: training loop settings (steps, batch of clips, optimizer, devices).
        on_bad_file: an unreadable episode file: 'error' (one line naming it) or 'skip' (counted).
        out: run directory; the model goes to <out>/worldmodel/ (hub format: config.json + safetensors).
    """
    from warmstart.errors import ConfigError
    from warmstart_rl.contextwm import PretrainConfig, pretrain_world_model
    from warmstart_rl.data import load_corpus, load_videos

    if data is None and not videos:
        raise ConfigError("worldmodel-pretrain needs --data CORPUS or --videos FOLDER [FOLDER ...]")
    config = PretrainConfig(model, options.clip_length, options.heldout_fraction)
    corpus = load_corpus(data, on_bad_file) if data is not None else None
    if videos:
        if size is None:
            size = int(corpus.meta["frame_shape"][0]) if corpus is not None else None
        clips, info = load_videos(list(videos), size, on_bad_file)  # size None: the first video's
        sources = info["sources"]
        if corpus is not None:
            clips = [e.frames for e in corpus.episodes] + clips
            sources = [{"folder": str(data), "env_id": corpus.meta["env"]["env_id"]}, *sources]
        run_dir, _ = run.open(out=out)
        size = int(clips[0].shape[1])
        _, metrics = pretrain_world_model(clips, config, engine, run_dir, image_size=size, sources=sources)
        metrics["skipped files"] = info["skipped_files"]
    else:
        assert corpus is not None
        run_dir, _ = run.open(out=out)
        _, metrics = pretrain_world_model(corpus, config, engine, run_dir)
        metrics["skipped files"] = corpus.meta["skipped_files"]
    print_table(f"world model -> {run_dir / 'worldmodel'}", ("", ""), _rows(metrics))


@app.command(name="worldmodel-finetune")
def worldmodel_finetune(
    model: Path | None = None,
    env: EnvConfig | None = None,
    agent: AgentConfig = AgentConfig(),
    architecture: WorldModelConfig = WorldModelConfig(),
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """ContextWM fine-tuning: action-conditioned world model + actor-critic in imagination; no --model: scratch.

    Args:
        model: a `worldmodel-pretrain` run directory (or its worldmodel/ folder); omit to start from scratch.
        env: the environment (default: the one the videos came from; required after --videos pretraining).
        agent: the Dreamer-style learner's budget, hyperparameters and device.
        architecture: world-model architecture when starting from scratch (ignored with --model).
        seed: seed of the environment, the networks and the replay sampling.
        out: run directory; the fine-tuned model goes to <out>/worldmodel/, the actor-critic to <out>/agent/,
            the return curve to curve.json.
    """
    from dataclasses import replace

    import torch

    from warmstart.errors import ConfigError
    from warmstart_rl.contextwm import WorldModel, load_world_model, save_agent, save_world_model, train_agent
    from warmstart_rl.data import make_env

    world_model = None
    if model is not None:
        world_model, spec = load_world_model(model)
        if env is None and not spec.get("env"):
            raise ConfigError(
                f"--model {model} was pretrained on videos of other environments; name the target with --env.env_id"
            )
        env = env or EnvConfig(**spec["env"])
        if env.size is None:
            env = replace(env, size=world_model.image_size)
    env = (env or EnvConfig()).resolved()
    if world_model is None:
        probe = make_env(env)
        torch.manual_seed(seed)
        world_model = WorldModel(int(probe.action_space.n), probe.observation_space.shape[0], architecture)
        probe.close()
    run_dir, _ = run.open(out=out)
    result = train_agent(env, agent, world_model, seed=seed)
    save_world_model(world_model, run_dir / "worldmodel", asdict(env), result["metrics"])
    save_agent(result["agent"], run_dir / "agent", asdict(env), {"final_return": result["final_return"]})
    (run_dir / "curve.json").write_text(json.dumps(result["curve"]))
    log_return_curve(run_dir, result["curve"], f"world-model agent on {env.env_id}")
    rows = [
        ("init", str(model) if model is not None else "scratch"),
        ("env steps", str(agent.total_steps)),
        ("env steps/s", f"{result['steps_per_s']:.0f}"),
        ("episodes", str(len(result["curve"]))),
        ("mean return (last 20 episodes)", f"{result['final_return']:.3f}"),
        *_rows(result["metrics"]),
    ]
    print_table("world-model agent", ("", ""), rows)


@app.command
def robofume(
    data: Path,
    options: RoboFuMEConfig = RoboFuMEConfig(),
    env: EnvConfig | None = None,
    engine: EngineConfig = _engine_default(steps=300, batch=64),
    seed: int = 0,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """RoboFuME: success classifier from goal images, offline Cal-QL on the demos, online fine-tuning on its reward.

    Args:
        data: a corpus whose labelled episodes are the demonstrations (frames, actions, rewards).
        options: online budget, Cal-QL and exploration settings; --options.pretrain false = online from scratch.
        env: the environment for online fine-tuning (default: the corpus' own).
        engine: the classifier's and the offline Cal-QL's training loop (steps, batch, devices).
        seed: seed of the Q-network, the environment and the replay sampling.
        out: run directory; classifier/ and qnet/ (safetensors + config.json), curve.json.
    """
    from warmstart_rl.data import load_corpus
    from warmstart_rl.robofume import run_robofume

    corpus = load_corpus(data)
    run_dir, _ = run.open(out=out)
    result = run_robofume(corpus, options, engine, env, run_dir, seed)
    (run_dir / "curve.json").write_text(json.dumps(result["curve"]))
    log_return_curve(run_dir, result["curve"], "RoboFuME online: training-episode return")
    health = result["health"] | {"reward_source": result["reward_source"]}
    (run_dir / "health.json").write_text(json.dumps(health, indent=1))
    print_table(
        f"RoboFuME -> {run_dir}",
        ("", ""),
        [*_rows(result["metrics"]), ("reward source", result["reward_source"])],
    )
    print(("warning: " if not health["healthy"] else "") + health["line"])


@app.command(demo=True)
def demo(out: Path | None = None, run: RunContext | None = None) -> DemoResult:
    """The whole VPT path on MiniGrid in well under a minute: collect, IDM, label, BC, PPO from BC.

    Args:
        out: where the corpus and models go (default: a temporary directory).
    """
    from warmstart_rl.bench import BenchConfig, pretrain_pipeline, single_thread
    from warmstart_rl.vpt import PPOConfig, finetune_ppo

    with tempfile.TemporaryDirectory(prefix="warmstart-rl-demo-") as tmp, single_thread():
        root = Path(out) if out is not None else Path(tmp)
        config = BenchConfig(episodes=120, labelled=12, idm_steps=150, bc_steps=150)
        pre = pretrain_pipeline(config, seed=0, root=root / "corpus")
        ppo = finetune_ppo(
            config.env, PPOConfig(total_steps=1024, kl_coef=0.1), config.policy, pre["policy"], seed=0
        )
    rows = [(k, f"{v:.3g}") for k, v in pre["metrics"].items()]
    rows += [
        ("ppo/return (from BC, 1024 steps)", f"{ppo['final_return']:.3f}"),
        ("ppo/env steps/s", f"{ppo['steps_per_s']:.0f}"),
    ]
    print_table("warmstart-rl demo (VPT on MiniGrid)", ("", ""), rows)
    return DemoResult(
        what="VPT on MiniGrid-Empty-Random-5x5: IDM on 12 labelled eps -> pseudo-labels -> BC -> PPO",
        metric="IDM pseudo-label accuracy",
        value=float(pre["metrics"]["label/accuracy_vs_truth"]),
        details={"bc_return": pre["metrics"].get("bc/return"), "ppo_return": ppo["final_return"]},
    )


@app.command
def bench(
    kind: Literal["vpt", "worldmodel", "robofume", "idm-repr"] = "vpt",
    setup: BenchConfig = BenchConfig(),
    worldmodel: WorldModelBenchConfig = WorldModelBenchConfig(),
    robofume: RoboFuMEBenchConfig = RoboFuMEBenchConfig(),
    representation: ReprConfig = ReprConfig(),
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """Transfer vs scratch at equal env steps, several seeds; report.md + plot.png + results.json.

    Args:
        kind: 'vpt' (PPO scratch vs BC-init vs BC-init + KL), 'idm-repr' (pretrained encoders for imitation),
            'worldmodel' (ContextWM pretrained vs scratch
            world model) or 'robofume' (offline Cal-QL + learned reward vs online from scratch).
        setup: the VPT bench's seeds, environment, steps, corpus size, threshold (`--setup.env.env_id
            ALE/Breakout-v5` for the Atari row).
        worldmodel: the world-model bench's settings.
        robofume: the RoboFuME bench's settings.
        representation: the 'idm-repr' bench (inverse-dynamics vs forward-dynamics vs contrastive vs scratch
            encoders for few-demo multitask imitation, arXiv 2305.16985).
        out: run directory for report.md, plot.png, results.json.
    """
    from warmstart_rl.bench import run_bench, single_thread
    from warmstart_rl.bench_robofume import run_robofume_bench
    from warmstart_rl.bench_worldmodel import run_worldmodel_bench

    run_dir, _ = run.open(out=out)
    with single_thread():
        if kind == "worldmodel":
            report = run_worldmodel_bench(worldmodel, run_dir)
        elif kind == "robofume":
            report = run_robofume_bench(robofume, run_dir)
        elif kind == "idm-repr":
            from warmstart_rl.idmrepr import run_repr_bench

            report = run_repr_bench(representation, run_dir)
        else:
            report = run_bench(setup, run_dir)
    _print_report(report)


def _print_report(report) -> None:
    rows = []
    for name, m in report.summary["methods"].items():
        rows.append((name, f"{m['mean']:.3f} ± {m['std']:.3f}" if m["mean"] is not None else "—"))
    for metric, per in report.summary["extra_metrics"].items():
        for name, m in per.items():
            rows.append(
                (f"{metric} [{name}]", f"{m['mean']:.4g} ± {m['std']:.3g}" if m["mean"] is not None else "—")
            )
    print_table(f"bench -> {report.report_md}", ("", ""), rows)


@app.command
def l2m(setup: L2MConfig = L2MConfig(), out: Path | None = None, run: RunContext | None = None) -> None:
    """L2M: a Decision Transformer pretrained on task set A (cached), then new tasks learned in sequence with a
    modulator pool on the frozen DT vs full fine-tuning vs one shared LoRA; accuracy on every task after the
    sequence, forgetting, routing and greedy return as a bench.

    Args:
        setup: seeds, tasks (MiniGrid ids + action permutations), the DT, pool size, LoRA rank, steps per task.
        out: run directory for report.md, plot.png, results.json, matrices.json.
    """
    from warmstart_rl.bench import single_thread
    from warmstart_rl.l2m import check_config, run_l2m_bench

    check_config(setup)  # bad input fails before the run directory exists
    run_dir, _ = run.open(out=out)
    with single_thread():
        report = run_l2m_bench(setup, run_dir)
    _print_report(report)


@app.command(name="lm-policy")
def lm_policy(
    setup: LMPolicyConfig = LMPolicyConfig(),
    text: Path | None = None,
    out: Path | None = None,
    run: RunContext | None = None,
) -> None:
    """LID: a BabyAI policy from a tiny GPT-2 pretrained on local text vs the same network from random weights.

    Args:
        setup: seeds, environment, demonstrations, novel goals, GPT-2 size, LM and BC steps.
        text: a folder of .txt/.md files for LM pretraining (default: installed packages' descriptions).
        out: run directory for report.md, plot.png, results.json.
    """
    from warmstart_rl.bench import single_thread
    from warmstart_rl.lmpolicy import run_lmpolicy_bench

    run_dir, _ = run.open(out=out)
    with single_thread():
        report = run_lmpolicy_bench(setup, run_dir, text)
    _print_report(report)


@app.command
def throughput(
    steps: int = 4096, repeats: int = 2, out: Path | None = None, run: RunContext | None = None
) -> None:
    """Env steps/s of `finetune` (BC init + KL) vs plain SB3 PPO with the same network: the overhead ratio.

    Args:
        steps: environment steps per timed run.
        repeats: timed runs per variant (the best is kept).
        out: run directory for throughput.json.
    """
    from warmstart_rl.bench import measure_throughput, single_thread

    run_dir, _ = run.open(out=out)
    with single_thread():
        result = measure_throughput(steps, repeats)
    (run_dir / "throughput.json").write_text(json.dumps(result, indent=1))
    print_table("env steps/s", ("variant", "steps/s"), [(k, f"{v:.4g}") for k, v in result.items()])


def main() -> None:
    app.entry()


if __name__ == "__main__":
    main()
