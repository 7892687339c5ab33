"""Flags that pipelines.serve and pipelines.verify share (one definition
each: absl refuses a flag defined twice in one process)."""

from absl import flags

QUERY_LOG = flags.DEFINE_string(
    'query_log', None, 'Folder of the append-only per-client query log '
    '(serve writes it; verify reads the queries a suspect is tested on).')
WATERMARK_KEY = flags.DEFINE_string(
    'watermark_key', None, 'File of the watermark key (16+ bytes, e.g. '
    'head -c 32 /dev/urandom > wm.key). serve: answer a keyed fraction of '
    'queries with a keyed wrong label (needs --query_log); verify: the key '
    'to test a suspect with.')
WATERMARK_RATE = flags.DEFINE_float(
    'watermark_rate', 0.005, 'Fraction of queries the watermark answers '
    '(verify: the server\'s value).')
DETECT = flags.DEFINE_string(
    'detect', '', 'Detectors of stealing clients, comma-separated: prada, '
    'prada:DELTA, shift, shift:ALPHA (pipelines.matrix: prada,shift when '
    'empty).')
