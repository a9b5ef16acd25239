"""The experiment: IMP with rewinding, its replicates and controls (run), and the IMP variants
that branch off a finished run (variants). `Run` and the entry points are re-exported here."""
from trainer.imp.run import Replicate, Run, replicate_seeds, run_controls_on, run_experiment, train_ticket

__all__ = ["Replicate", "Run", "replicate_seeds", "run_controls_on", "run_experiment", "train_ticket"]
