"""Explanations of units: scores by simulation, offline explainers, whole layers, a results store.

- ``score``: ``score_explanation``, ``find_units``, ``explain_unit``, ``rf_overlap``, ``describe``
  (one unit, one explanation; after "Language models can explain neurons", Bills et al. 2023)
- ``offline``: the explainer and simulator protocols, and the deterministic ones that ship
  (concepts from annotations for images, tokens and bigrams for text)
- ``layer``: ``explain_layer``, every unit of a layer explained and scored, kept in a resumable
  results store beside the activation store, returned as a searchable ``ExplanationTable``
- ``sampling``: scores estimated from a budget of inputs: uniform, top-only, and model-guided
  importance sampling (MG-IS), compared against the all-data score
"""

from .layer import explain_layer
from .offline import (ConceptExplainer, ConceptSimulator, Explainer, ExplanationFailed,
                      RecordExplainer, RecordSimulator, Simulator, TokenExplainer, TokenSimulator,
                      unit_values)
from .sampling import SamplingComparison, compare_sampling, mgis_sample, weighted_corr
from .score import (ExplanationScore, describe, explain_unit, find_units, rf_overlap,
                    score_explanation, token_strings, token_strings_of)
from .table import ExplanationTable

__all__ = ["ExplanationScore", "score_explanation", "find_units", "rf_overlap", "explain_unit",
           "describe", "token_strings", "token_strings_of", "Explainer", "Simulator",
           "ExplanationFailed", "ConceptExplainer", "ConceptSimulator", "TokenExplainer",
           "TokenSimulator", "RecordExplainer", "RecordSimulator", "unit_values", "explain_layer", "ExplanationTable",
           "compare_sampling", "SamplingComparison", "mgis_sample", "weighted_corr"]
