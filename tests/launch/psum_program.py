"""A tiny multi-controller program for the launcher tests: joins through
trlx_jax.distributed.initialize, psums every device's global index over all processes and prints
one JSON line with what it saw."""

import json
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trlx_jax.distributed import initialize

spec = initialize()
mesh = jax.make_mesh((jax.device_count(),), ("d",))
local = jax.local_device_count()
# Device k of the job holds the value k (processes own consecutive blocks of devices).
values = np.arange(local, dtype=np.float32) + jax.process_index() * local
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("d")), values)
total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, "d"), mesh=mesh, in_specs=P("d"),
                              out_specs=P()))(x)
print(json.dumps({"source": spec.source if spec else None, "process": jax.process_index(),
                  "processes": jax.process_count(), "devices": jax.device_count(),
                  "local_devices": local, "psum": float(np.asarray(total)[0]),
                  "argv": sys.argv[1:]}), flush=True)
