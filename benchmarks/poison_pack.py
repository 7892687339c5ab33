r"""Pack an exported poisoned set losslessly into small files, and back.

    python benchmarks/poison_pack.py pack SET.npz PREFIX [--parts=2]
    python benchmarks/poison_pack.py unpack PREFIX --dataset=MNIST.npz --out=SET.npz

For moving a poisoned set (the `--export_npz` of `pipelines.ntga`) off a
machine that returns only small files (the lent GPU machine). A poisoned
MNIST training set is float32 but holds only a few thousand distinct values
(clean pixels k/255 plus a few PGD steps), so it is stored as its sorted
distinct values and a uint16 index per pixel, compressed and bit-exact
(sizes: BUILD_NOTES.md, "NTGA generation"). The clean test split
is not stored; `unpack` takes it from `--dataset` and checks it against the
SHA-256 recorded at packing, so a different copy of the data is an error.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def pack(src: str, prefix: str, parts: int = 2) -> list[str]:
  with np.load(src) as z:
    x, y, idx = z['x_train'], z['y_train'], z['idx_train']
    x_test, y_test = z['x_test'], z['y_test']
  values, index = np.unique(x, return_inverse=True)
  if len(values) > 2**16:
    raise ValueError(f'{src}: {len(values)} distinct values do not fit a '
                     'uint16 index')
  index = index.reshape(x.shape).astype(np.uint16)
  os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
  paths = []
  for k, rows in enumerate(np.array_split(np.arange(len(x)), parts)):
    path = f'{prefix}_{k}.npz'
    np.savez_compressed(
        path, values=values, index=index[rows], y_train=y[rows],
        idx_train=idx[rows], part=k, parts=parts, dtype=str(x.dtype),
        sha_x_train=_sha(x), sha_x_test=_sha(x_test), y_test=y_test)
    paths.append(path)
    print(f'{path}: {os.path.getsize(path) / 1e6:.1f} MB', flush=True)
  return paths


def unpack(prefix: str, dataset: str, out: str) -> str:
  from modelsteal import data as data_lib  # pylint: disable=g-import-not-at-top
  paths = sorted(glob.glob(f'{prefix}_*.npz'),
                 key=lambda p: int(p.rsplit('_', 1)[1].split('.')[0]))
  if not paths:
    raise FileNotFoundError(f'no {prefix}_*.npz')
  zs = [dict(np.load(p)) for p in paths]
  if len(zs) != int(zs[0]['parts']):
    raise ValueError(f'{prefix}: {len(zs)} of {int(zs[0]["parts"])} parts')
  values = zs[0]['values']
  x = values[np.concatenate([z['index'] for z in zs])].astype(str(zs[0]['dtype']))
  if _sha(x) != str(zs[0]['sha_x_train']):
    raise ValueError(f'{prefix}: the unpacked images differ from the packed')
  ds = data_lib.load_dataset(dataset)
  x_test = ds.x_test
  if _sha(x_test) != str(zs[0]['sha_x_test']):
    raise ValueError(f'{dataset}: its test split is not the one the set was '
                     'made with (SHA-256 differs)')
  np.savez(out, x_train=x, y_train=np.concatenate([z['y_train'] for z in zs]),
           idx_train=np.concatenate([z['idx_train'] for z in zs]),
           x_test=x_test, y_test=zs[0]['y_test'])
  print(f'{out}: {len(x)} poisoned images, bit-exact', flush=True)
  return out


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='cmd', required=True)
  a = sub.add_parser('pack')
  a.add_argument('src')
  a.add_argument('prefix')
  a.add_argument('--parts', type=int, default=2)
  b = sub.add_parser('unpack')
  b.add_argument('prefix')
  b.add_argument('--dataset', required=True)
  b.add_argument('--out', required=True)
  args = p.parse_args(argv)
  try:
    if args.cmd == 'pack':
      pack(args.src, args.prefix, args.parts)
    else:
      unpack(args.prefix, args.dataset, args.out)
  except (OSError, ValueError, KeyError) as e:
    sys.exit(f'poison_pack: error: {e}')


if __name__ == '__main__':
  main(sys.argv[1:])
