"""The report's footnotes: what each number means, each linking to its section of docs/measured.md ("What is
measured"). Tables mark a column with `marker(note)`; `footnotes` renders the notes that apply to the spec."""

from __future__ import annotations

import os
from pathlib import Path

from lottery.reports.escaping import escaped
from lottery.spec import ExperimentSpec

MEASURED = "docs/measured.md"

# note -> (section anchor in docs/measured.md, text: a format string over the spec's groups)
NOTES: dict[str, tuple[str, str]] = {
    "early_stop": (
        "accuracy-and-early-stopping",
        "Early stopping: the evaluation iteration of minimum validation loss, and the test accuracy there.",
    ),
    "controls": (
        "controls",
        "Controls (pairing = '{controls.pairing}'): random reinitialization puts the level's mask on fresh weights, "
        "random pruning a random mask of the same per-layer density on W_k. 'paired': the control seed does not "
        "depend on the level or k (every level reinitializes with the same weights; random masks nest); "
        "'independent': a seed per (k, level).",
    ),
    "copies": (
        "the-copies-sgd-noise",
        "Stability copies (every copy, copy 0 included) train with data-order and augmentation seeds derived from "
        "the IMP chain's, so their SGD noise is independent of the noise that chose the mask; recorded in "
        "results.json (chain_seeds, copies).",
    ),
    "distances": (
        "distances",
        "Distances (L2, angle, L2 / norm of the full network) over the mask's kept coordinates of "
        "{stability.distance_params} parameters (stability.distance_params: 'prunable' = the prunable weights "
        "only, 'all' = also biases and BatchNorm).",
    ),
    "pruning": (
        "stability-to-pruning",
        "Stability to pruning: the full network and the subnetwork trained from W_k with the same data order. "
        "Defined for IMP and random pruning; none for random reinitialization (it does not start from W_k).",
    ),
    "barrier": (
        "instability-the-error-barrier",
        "Error barrier: max over α of E_α − mean(E_0, E_1), {stability.interpolation_points} evenly spaced α; "
        "test error on the whole test set, train error on a fixed subset of {stability.train_subset} training "
        "examples; BatchNorm statistics: '{stability.batchnorm}' (recompute: re-estimated at every α, the "
        "endpoints included).",
    ),
    "stable": (
        "stable",
        "Stable: every pair's test barrier below {stability.threshold:g} points; 'stable (mean)': the LMC paper's "
        "criterion, the mean barrier over the pairs below the threshold.",
    ),
    "warmup": (
        "learning-rate-warmup",
        "Warmup ({training.warmup_steps}): step t uses base · min(1, (t+1)/W); open_lth uses t/W (a one-step shift).",
    ),
    "dropout": (
        "dropout",
        "Dropout (p = {model.dropout:g}): its random stream is seeded by the data-order seed and the run's start "
        "iteration, so a run from k does not replay the dropout masks the dense run drew after k.",
    ),
    "early_bird": (
        "early-bird-mask-distance",
        "Early-bird: the Hamming distance between successive masks is normalised by the weights kept, |a ⊕ b| / "
        "(|a| + |b|), the fraction of kept weights that changed (You et al. divide by the weights considered, at "
        "most 2 × density); the mask has settled from the trace point after which it stays below "
        "{masks.early_bird_threshold:g}.",
    ),
    "mask_stability": (
        "mask-sources-in-the-stability-analysis",
        "Mask sources in the stability analysis: each stability.masks kind at every target density, studied at "
        "(k = masks.at = {masks.at}, level 0) from its finished run's mask and start weights; copies and measures "
        "as for IMP, no pruning distance for a reinit ablation.",
    ),
}


def applicable(spec: ExperimentSpec) -> list[str]:
    """The notes that apply to an experiment, in order."""
    notes = ["early_stop"]
    if spec.controls.kinds or spec.stability.controls:
        notes.append("controls")
    if spec.stability.rewind:
        notes += ["copies", "distances", "pruning", "barrier", "stable"]
    if spec.training.warmup_steps != "0it":
        notes.append("warmup")
    if spec.model.dropout > 0:
        notes.append("dropout")
    if "early_bird" in spec.masks.sources:
        notes.append("early_bird")
    if spec.stability.masks:
        notes.append("mask_stability")
    return notes


def marker(note: str, spec: ExperimentSpec) -> str:
    """A superscript link to the footnote `note` (empty where it does not apply)."""
    notes = applicable(spec)
    if note not in notes:
        return ""
    return f'<sup><a href="#note-{note}">{notes.index(note) + 1}</a></sup>'


def measured_href(report_dir: Path) -> str | None:
    """docs/measured.md relative to the report, where this installation has its source tree (None elsewhere: an
    installed package has no docs, and the report then names the page without linking it)."""
    docs = Path(__file__).resolve().parents[3] / MEASURED
    if not docs.is_file():
        return None
    return Path(os.path.relpath(docs, Path(report_dir).resolve())).as_posix()


def footnotes(spec: ExperimentSpec, report_dir: Path) -> str:
    """The numbered notes, each linking to its section of docs/measured.md."""
    href = measured_href(report_dir)

    def link(anchor: str, text: str) -> str:
        return text if href is None else f'<a href="{escaped(href)}{anchor}">{text}</a>'

    groups = {name: getattr(spec, name) for name in ("model", "training", "controls", "stability", "masks")}
    items = []
    for note in applicable(spec):
        anchor, text = NOTES[note]
        section = link(f"#{anchor}", f"{MEASURED} § {anchor.replace('-', ' ')}")
        items.append(f'<li id="note-{note}">{escaped(text.format(**groups))} ({section})</li>')
    return (
        f"<h2>Notes</h2><p>What each number is, and every choice behind it: {link('', MEASURED)} "
        f'("What is measured", in the lottery source).</p><ol class="notes">{"".join(items)}</ol>'
    )
