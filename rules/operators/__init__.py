"""The operators of the rule language; each module holds one, with its exact semantics."""

from rules.operators.aggregate import Aggregate, ComputeSpec, item_scope_class, share_folds
from rules.operators.base import Emitter, Output, Partition, Rule, Scope
from rules.operators.count import Count
from rules.operators.for_ import For
from rules.operators.match import Match
from rules.operators.sequence import Sequence, StepSpec
from rules.operators.tally import Tally

__all__ = [
    "Aggregate",
    "ComputeSpec",
    "Count",
    "Emitter",
    "For",
    "Match",
    "Output",
    "Partition",
    "Rule",
    "Scope",
    "Sequence",
    "StepSpec",
    "Tally",
    "item_scope_class",
    "share_folds",
]
