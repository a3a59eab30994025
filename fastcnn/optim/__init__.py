"""Optimizers and learning-rate schedules, as torch.optim's: same
constructor arguments, update formulas, param_groups and state_dict layout.
They update the model's Parameters in place from their .grad."""
from fastcnn.optim.optimizer import Optimizer
from fastcnn.optim.sgd import SGD
from fastcnn.optim.adam import Adam, AdamW
from fastcnn.optim import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]
