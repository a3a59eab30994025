"""The generator layer constructors and dropout draw from unless given one;
fastcnn.manual_seed reseeds it so model construction is reproducible."""
import numpy as np

__all__ = ["manual_seed", "default_generator"]

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator that layer constructors draw their initial weights from."""
    global _generator
    _generator = np.random.default_rng(seed)


def default_generator():
    return _generator
