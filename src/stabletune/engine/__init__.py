"""The run engine: one body for every fine-tuning run (:func:`stabletune.training.train_members`).

* :mod:`.setup` -- config -> data, the paper's split, tokenised sets, each member's prepared model, schedule,
  precision, evaluation plan;
* :mod:`.loop` -- the step loop with periodic evaluation, per-member state (logs, evaluations, best weights,
  divergence, timings), and the step function of an ordinary run;
* :mod:`.ensemble` -- the step function of K members as one vectorised model (nothing else);
* :mod:`.finish` -- test of the last and best checkpoints, :class:`~.finish.RunResult`, the run folder;
* :mod:`.runlog` -- the run folder, written atomically;
* :mod:`.events` -- the one callback :class:`~.events.Event` (torch-free).
"""
