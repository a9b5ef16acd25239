"""The experiment: `Run` and its entry points (run), the ticket chain (rounds), its controls
(controls), replicates (replicates), training and recording one round (round_training), the pieces
a run splits into for many workers (pieces), and the IMP variants that branch off a finished run
(variants). `Run` and the entry points are re-exported here."""
from trainer.imp.replicates import Replicate, replicate_seeds
from trainer.imp.run import Run, run_controls_on, run_experiment, train_ticket

__all__ = ["Replicate", "Run", "replicate_seeds", "run_controls_on", "run_experiment", "train_ticket"]
