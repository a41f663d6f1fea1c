"""Evaluation and report (PMG §4), on tables and loaded models (no paths, no loading, no file writes).

- `metrics`: LPIPS (AlexNet, VGG) and SSIM of chosen outputs against history
  and target images, batched with per-image feature reuse; bad input counted.
- `ablations`: the paper's Table 2 / 3 variants (which conditions each uses,
  which share a run), the pairs they run on, their metrics and tables.
- `ground_truth`: the scenarios' default-world checks of the latent
  preferences (declared per scenario in `pmg.scenarios`), summarised as rates.
- `weights`: the weight case study (d_p, d_t, z over w_p:w_t) as CSV + SVG text.
- `report`: the self-contained HTML report, the headline table and the
  pair-weighted overall; `gallery_png`: the README's PNG grid.

The `evaluate`, `ablations` and `report` stages (`pmg.stages`) read the
inputs, load the LPIPS networks, call these functions and write the outputs;
nothing here imports them. Images are opened from the paths the stages
resolved. Import from the submodules.
"""
