"""Model extraction: query strategies, labeling through the oracle, students.

Knockoff-style extraction (Orekondy et al., CVPR 2019, arXiv 1812.02766;
Correia-Silva et al., "Copycat CNN", arXiv 1806.05476): the attacker sends
its own images to the black-box victim and trains a student on the answers.
"""

from modelsteal.attacks.components import evaluate_model
from modelsteal.attacks.components import finetune_model
from modelsteal.attacks.components import label_queries
from modelsteal.attacks.components import train_model
from modelsteal.attacks.strategies import QUERY_STRATEGIES
from modelsteal.attacks.strategies import select_queries

__all__ = ['QUERY_STRATEGIES', 'evaluate_model', 'finetune_model', 'label_queries',
           'select_queries', 'train_model']
