"""The paper's techniques, one module each (optimizer, re-init, Mixout, LLRD, weight decay toward the pre-trained
weights, parameter distance), the table of where each model family keeps its blocks (:mod:`.families`), and
:func:`prepare`, the one place that applies them in the right order."""

from stabletune.techniques.prepare import Prepared, prepare

__all__ = ["Prepared", "prepare"]
