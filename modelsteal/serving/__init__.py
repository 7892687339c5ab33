"""A TF-Serving-compatible REST server for the SavedModels this package
exports (victims and stolen students alike).

    from modelsteal import serving
    servable = serving.load_servable('runs/.../model/serving', 'mnist',
                                     defense='topk:3')
    server = serving.ModelServer([servable], batching=True)
    serving.serve_forever(server.make_app(), port=8501)

Clients written for TF Serving's REST API work unchanged; see `app` for the
endpoints and error codes, `codec` for the JSON formats, `registry` for
versions and output defences, `batching` for request batching. The command
line is `python -m pipelines.serve`.
"""

from modelsteal.serving.app import BackgroundServer
from modelsteal.serving.app import ModelServer
from modelsteal.serving.app import serve_forever
from modelsteal.serving.app import wait_until_ready
from modelsteal.serving.batching import Batcher
from modelsteal.serving.codec import ServingError
from modelsteal.serving.registry import ServableLoadError
from modelsteal.serving.registry import Servable
from modelsteal.serving.registry import find_versions
from modelsteal.serving.registry import load_servable

__all__ = ['BackgroundServer', 'Batcher', 'ModelServer', 'Servable',
           'ServableLoadError', 'ServingError', 'find_versions',
           'load_servable', 'serve_forever', 'wait_until_ready']
