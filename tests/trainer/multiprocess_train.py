"""`python -m trlx_jax.cli.train` with the tests' dense reward term registered (see
trainer_testing.length_closeness), for runs launched as several processes."""

import sys

from trainer_testing import register_length_reward

from trlx_jax.cli.train import main

if __name__ == "__main__":
    register_length_reward()
    sys.exit(main())
