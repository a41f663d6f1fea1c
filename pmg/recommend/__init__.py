"""Generated images as user features for recommendation (PMG §4.6, RQ5, Table 4).

- `mmgcn`: the multimodal graph recommender (MMGCN, Wei et al., MM 2019) in
  plain torch, and its BPR training loop.
- `data`: the graph (users split by the caller, evaluated users' last
  positives held out) and the visual inputs of the four Table-4 settings.
- `metrics`: full-ranking Recall@K / NDCG@K and bootstrap intervals.
- `experiment`: every setting × seed, and the metrics document.

The preference-only images themselves come from
`pmg.method.preference_image`. Nothing here reads or writes files (the
feature file format is `pmg.io.read_features` / `write_features`); the
`recommend` stages (`pmg.stages.recommend`) load, run and save.
"""
