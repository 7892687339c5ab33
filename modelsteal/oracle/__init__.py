"""Black-box access to victims: one interface, budget, answer cache.

`make_oracle(victim_ref, ...)` builds the right oracle from a victim
reference (`modelsteal.victims.VictimRef`, or its JSON form, the small dict
that is also part of component fingerprints):

    {'kind': 'local', 'path': SAVEDMODEL_OR_KERAS_PATH, 'fingerprint': ...}
    {'kind': 'rest', 'url': 'http://HOST:PORT/v1/models/NAME',
     'fingerprint': ..., 'num_classes': K}   (`rest.victim_ref_from_url`)
    {'kind': 'grpc', 'address': 'HOST:PORT/NAME', 'fingerprint': ...,
     'num_classes': K}           (`grpc_oracle.victim_ref_from_address`)
"""

from modelsteal.oracle.base import BudgetExceededError
from modelsteal.oracle.base import LocalOracle
from modelsteal.oracle.base import Oracle
from modelsteal.oracle.base import OracleError
from modelsteal.oracle.cache import AnswerCache

ORACLE_KINDS = ('local', 'rest', 'grpc')


def make_oracle(victim_ref, **kwargs) -> Oracle:
  """An oracle for a victim reference (see the module docstring)."""
  from modelsteal.victims import VictimRef  # pylint: disable=g-import-not-at-top
  ref = VictimRef.coerce(victim_ref)
  kind = ref.kind
  if kind == 'local':
    from modelsteal.export import load_predictor  # pylint: disable=g-import-not-at-top
    return LocalOracle(load_predictor(ref.location, trusted=True),
                       identity=ref.fingerprint, **kwargs)
  if kind == 'rest':
    from modelsteal.oracle.rest import RestOracle  # pylint: disable=g-import-not-at-top
    return RestOracle(ref.location, identity=ref.fingerprint,
                      num_classes=ref.details.get('num_classes'),
                      signature_name=ref.details.get('signature_name'),
                      **kwargs)
  if kind == 'grpc':
    from modelsteal.oracle.grpc_oracle import GrpcOracle  # pylint: disable=g-import-not-at-top
    return GrpcOracle(ref.location, identity=ref.fingerprint,
                      num_classes=ref.details.get('num_classes'),
                      signature_name=ref.details.get('signature_name'),
                      **kwargs)
  raise ValueError(f'unknown victim kind {kind!r}; valid: {ORACLE_KINDS}.')


__all__ = ['AnswerCache', 'BudgetExceededError', 'LocalOracle', 'Oracle',
           'OracleError', 'make_oracle', 'ORACLE_KINDS']
