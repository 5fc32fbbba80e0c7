"""A study's pictures, drawn by Optuna's matplotlib backend: optimization history, parameter importances and
parallel coordinates, as PNG files in the study directory."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


def write_study_plots(study: Any, study_dir: Path) -> list[Path]:
    """Write what the study supports (importances need two finished trials and a parameter that varied);
    returns the files written. A plot that cannot be drawn is skipped, never fatal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return []
    plots = {"history.png": ovm.plot_optimization_history}
    if len(done) >= 2 and any(len({t.params.get(k) for t in done}) > 1 for k in done[0].params):
        # PED-ANOVA needs no scikit-learn (Optuna's default fANOVA does)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" since Optuna 3.6
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        plots["importances.png"] = lambda s: ovm.plot_param_importances(s, evaluator=evaluator)
        plots["parallel.png"] = ovm.plot_parallel_coordinate
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, draw in plots.items():
            try:
                ax = draw(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(8, 5)
                fig.tight_layout()
                fig.savefig(study_dir / name, dpi=100)
                plt.close(fig)
                written.append(study_dir / name)
            except Exception:  # noqa: BLE001 - e.g. importances of a parameter that never varied
                plt.close("all")
    return written
