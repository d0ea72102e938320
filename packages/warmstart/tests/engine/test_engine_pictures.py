"""The core's one way to put pictures into a run's TensorBoard."""

from __future__ import annotations

from pathlib import Path

import torch

from warmstart.engine.metrics import log_pictures


def test_images_figures_and_curves_land_in_the_runs_tensorboard(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    image = torch.zeros(4, 6, 3)
    image[:, :3, 0] = 1.0  # left half red
    folder = log_pictures(
        tmp_path,
        images={"views/a": image},
        figures={"curve": fig},
        scalars={"episode/return": [(0, 0.5), (10, 1.5)]},
        step=10,
    )
    assert folder == tmp_path / "tensorboard"
    events = EventAccumulator(str(folder)).Reload()
    tags = events.Tags()
    assert set(tags["images"]) == {"views/a", "curve"}
    assert [(e.step, e.value) for e in events.Scalars("episode/return")] == [(0, 0.5), (10, 1.5)]
    (picture,) = events.Images("views/a")
    assert (picture.width, picture.height, picture.step) == (6, 4, 10)
    assert not plt.fignum_exists(fig.number)  # figures are closed once logged
