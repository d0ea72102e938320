import torch

from warmstart_3d.data import load_scene, make_scene
from warmstart_3d.instantsplat import InstantSplatConfig, initialise
from warmstart_3d.splatfit import SplatFitConfig, make_strategy, train_splats


def test_fit_lowers_the_loss_and_the_strategy_densifies_and_resets_opacity(tmp_path):
    scene = load_scene(make_scene(tmp_path / "s", 2, 0, 16, 16, seed=1, n_per_object=120))
    cfg = InstantSplatConfig(init="random", n_points=150)
    params = initialise(scene, scene.viewmats, cfg, torch.Generator().manual_seed(0)).to_params()
    fit = SplatFitConfig(
        steps=24,
        refine_start=5,
        refine_every=10,
        grow_grad2d=1e-7,
        reset_every=20,
        prune_opa=0.001,
        refine_stop_fraction=1.0,
    )
    history = train_splats(params, scene.images, scene.Ks, scene.viewmats, fit)
    assert sum(history["loss"][16:20]) < sum(history["loss"][:4]), "loss falls before the opacity reset"
    assert history["n_gaussians"] > 150, "a tiny gradient threshold must clone/split Gaussians"
    # opacity reset (gsplat 1.5.3 never fires it): after step 20 every opacity is at most 2·prune_opa
    assert torch.sigmoid(params["opacities"]).max() < 0.2
    assert make_strategy(fit).reset_every == 20
