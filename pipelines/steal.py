r"""Steal a black-box image classifier and measure how well it was copied.

    python -m pipelines.steal --victim=mnist_cnn

Trains (once, then cached) the zoo victim `mnist_cnn` on its private half of
MNIST, labels 10,000 random queries from the attacker's half through a
label-only oracle, trains two students (the victim's architecture and an MLP)
on the answers, and prints accuracy and fidelity of each. Artifacts, with an
`execution.json` each, go under `--workdir` (default ./runs); the results
table to `<workdir>/steal/<run>/results.{csv,json}` and each student's
servable SavedModel to `<workdir>/train_model/<id>/model/serving/1`. Its cost
on a 2-core CPU: BUILD_NOTES.md, "Stealing".

Variants:

    --output=probs | label | topk:3 | rounded:2        what the victim reveals
    --budgets=100,1000,10000                           sweep, with a PNG plot
    --query_data=fashion_mnist                         knockoff-style queries
    --query_data=generator:cvae                        generated queries (a
                                 generator name, SavedModel path or URL;
                                 modelsteal.experiments.synthetic)
    --query_strategy=entropy --rounds=5                active stealing in rounds
    --query_strategy=random,margin,kcenter --rounds=5  strategies compared
                                 (rounds.csv, rounds.png)
    --victim_path=PATH --dataset=mnist                 your own victim
    --victim_url=http://127.0.0.1:8501/v1/models/NAME --dataset=mnist
                                 a victim behind a TF-Serving REST endpoint
                                 (python -m pipelines.serve), over HTTP
    --victim_grpc=127.0.0.1:8500/NAME --dataset=mnist  the same over TF
                                 Serving's gRPC PredictionService
    --students=mnist_cnn,lenet5,mnist_mlp              student architectures
    --warm_start --round_candidates=10000              cheaper rounds: train
                                 each round's student further, score 10,000
                                 candidates per round
    --student_recipe=batch_size=128,epochs=30          the students' training
                                 recipe (default: epochs by answer count)
    --students=mnist_cnn,ensemble:mnist_cnn,mcdropout:mnist_cnn:samples=20
                                 UQ students (modelsteal.uq) beside plain ones
    --distribute=mirrored|tpu                          tf.distribute strategy
    --rerun=train_model                                retrain, ignoring the cache
    --smoke                                            a tiny run, seconds

Rerunning a command reuses every finished step; an interrupted run resumes,
paying only for the queries that were not answered yet.
"""

from __future__ import annotations

from absl import app

from pipelines import _steal_flags
from pipelines import common


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def body():
    from modelsteal.experiments import steal  # pylint: disable=g-import-not-at-top
    steal.run(_steal_flags.steal_config())

  common.run_main(body, 'steal', _steal_flags.flag_names())


if __name__ == '__main__':
  app.run(main)
