"""Experiments: each a plain function over a frozen config.

A config validates itself once, at construction, and raises
`modelsteal.errors.ConfigError` naming the field; `run(config)` does the
work (every step a cached component run, so a rerun reuses what finished
and an interrupted run resumes) and prints its progress and results. No
flags: a notebook or a script runs the same experiment as the pipelines.

    from modelsteal.experiments import steal
    df, out_dir = steal.run(steal.StealConfig(victim='mnist_cnn',
                                              budgets=(1000,)))

Modules (import the one you need; importing this package loads nothing):
  steal        StealConfig, run; prepare / label / train_student
  rounds       round-based (active) stealing, `StealConfig(rounds=R)`
  uq           UQConfig: stealing with uncertainty-quantification students
  generator    TrainGeneratorConfig: the built-in class-conditional generator
  synthetic    SyntheticConfig: classifiers on generated vs real images
  ntga         NtgaConfig: unlearnable data (block-wise NTGA)
  poison_eval  PoisonEvalConfig: the damage a poisoned set does
  defend       DefendConfig: training defences against poisoned data
  common       the steps they share
"""
