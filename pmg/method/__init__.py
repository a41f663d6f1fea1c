"""The PMG method steps.

- `describe`: behaviour to text — one line per history item, conversation
  turn, target and supervision item (LLM summaries of long texts, captions).
- `keywords`: preference keywords `k_p` (one prompt per attribute) and target
  keywords `k_t`, with a recorded fallback when the LLM answers nothing usable.
- `llm_cache`: the content-addressed on-disk cache of LLM answers and captions
  that makes re-runs free.
- `prompts`: the versioned prompt templates, one YAML file per scenario.
"""

from pmg.method.describe import describe, run_describe, select_users
from pmg.method.keywords import keywords, run_keywords
from pmg.method.llm_cache import CachedCaptioner, CachedLLM, ContentCache, model_id_of
from pmg.method.parsing import parse_keywords

__all__ = [
    "CachedCaptioner",
    "CachedLLM",
    "ContentCache",
    "describe",
    "keywords",
    "model_id_of",
    "parse_keywords",
    "run_describe",
    "run_keywords",
    "select_users",
]
