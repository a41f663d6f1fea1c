"""The PMG method steps, on tables and loaded models (no paths, no loading, no file writes).

- `describe`: behaviour to text — one line per history item, conversation
  turn, target and supervision item (LLM summaries of long texts, captions).
- `keywords`: preference keywords `k_p` (one prompt per attribute) and target
  keywords `k_t`, with a recorded fallback when the LLM answers nothing usable.
- `soft`, `train_soft`: the soft preference model (the bias-correcting LLM's
  adapter) and its training on the frozen generator's denoising loss.
- `generate`: the weighted conditions and the batched candidates of a pair.
- `select`: the CLIP score `z` and the chosen candidate.
- `llm_cache`: the content-addressed cache of LLM answers and captions that
  makes re-runs free (the stages wrap the models they load in it).
- `prompts`: the versioned prompt templates, one YAML file per scenario.

Each step returns its table and a typed report (`DescribeReport`,
`KeywordsReport`, `GenerateReport`, `SelectReport`). The stages that read and
write the files, load the models and run these steps are in `pmg.stages`;
nothing here imports them. Import from the submodules.
"""
