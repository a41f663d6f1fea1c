"""The report's Jinja2 template (kept in a module, so it ships with the package).

Rendered with autoescaping on: every text from the tables is escaped; only
the SVG charts drawn by `pmg.evaluate.weights` (which escapes its own text)
are passed through as markup. No element refers to anything outside the file:
images are `data:` URIs, links are in-page anchors.
"""

REPORT_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d1d1f; background: #fff; }
  header { background: #24323f; color: #fff; padding: 14px 24px; }
  header h1 { margin: 0 0 4px 0; font-size: 22px; }
  header p { margin: 0; font-size: 13px; color: #cdd6df; }
  nav a { color: #9fd3ff; margin-right: 14px; }
  main { padding: 8px 24px 40px 24px; }
  section.scenario { border-top: 3px solid #24323f; margin-top: 24px; }
  h2 { font-size: 20px; margin: 12px 0; }
  h3 { font-size: 15px; margin: 18px 0 6px 0; color: #24323f; }
  table { border-collapse: collapse; font-size: 12.5px; margin: 4px 0 8px 0; }
  th, td { border: 1px solid #d0d5da; padding: 3px 7px; text-align: right; }
  th { background: #eef1f4; }
  td.label, th.label { text-align: left; }
  tr.skipped td { color: #999; }
  p.note { font-size: 12px; color: #555; max-width: 980px; }
  .gallery-pair { border: 1px solid #d0d5da; border-radius: 6px; padding: 8px 10px; margin: 10px 0; background: #fbfcfd; }
  .pair-title { font-weight: bold; font-size: 13px; margin-bottom: 4px; }
  .keywords { font-size: 12px; margin: 2px 0; }
  .keywords b { color: #24323f; }
  .strip { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; margin: 6px 0; }
  .group { border-left: 3px solid #d0d5da; padding-left: 6px; }
  .group-title { font-size: 11px; color: #555; margin-bottom: 2px; }
  figure { margin: 0; text-align: center; font-size: 10.5px; line-height: 1.25; }
  figure img, figure .missing { display: block; border: 1px solid #ccc; image-rendering: pixelated; background: #fff; }
  figure .missing { display: flex; align-items: center; justify-content: center; color: #a00; font-size: 11px; }
  figure.chosen img { outline: 3px solid #e8590c; outline-offset: 1px; }
  figure.chosen figcaption { color: #e8590c; font-weight: bold; }
  .muted { color: #777; }
</style>
</head>
<body>
<header>
  <h1>{{ title }}</h1>
  <p>profile {{ profile }} · images compared at {{ image_size }} px · LPIPS lower = more similar, SSIM higher = more similar</p>
  <nav>{% for s in scenarios %}<a href="#{{ s.name }}">{{ s.name }}</a>{% endfor %}</nav>
</header>
<main>
<h3>Protocol</h3>
<p class="note">{{ protocol }}</p>
{% if scenarios %}
<h3>Headline: PMG against no personalisation (test users, paired intervals, mismatched-user control)</h3>
<table class="headline">
  <tr>{% for c in headline_columns %}<th{% if loop.index <= 2 %} class="label"{% endif %}>{{ c }}</th>{% endfor %}</tr>
  {% for s in scenarios %}
  <tr>{% for cell in s.headline %}<td{% if loop.index <= 2 %} class="label"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
  {% endfor %}
</table>
<p class="note">{{ headline_note }}</p>
{% endif %}
{% if overall %}
<h3>Overall (pair-weighted over scenarios)</h3>
<table>
  <tr><th class="label">metric</th>{% for key in overall_keys %}<th>{{ key }}</th>{% endfor %}</tr>
  <tr><td class="label">value</td>{% for key in overall_keys %}<td>{{ fmt(overall.get(key)) }}</td>{% endfor %}</tr>
</table>
{% endif %}
{% for s in scenarios %}
<section class="scenario" id="{{ s.name }}">
  <h2>{{ s.name }}</h2>
  {% if s.metrics %}
  <h3>Main run ({{ s.variant }}): chosen outputs against history and target</h3>
  <table>
    <tr><th class="label">reference</th>{% for _, header in metric_columns %}<th>{{ header }}</th>{% endfor %}<th>pairs</th></tr>
    {% for ref in ["history", "target"] %}
    <tr><td class="label">{{ ref }}</td>
      {% for column, _ in metric_columns %}<td>{{ fmt(s.metrics.get(column ~ "_" ~ ref)) }}</td>{% endfor %}
      <td>{{ s.metrics.get("n_" ~ ref) }}</td></tr>
    {% endfor %}
  </table>
  <p class="note">{{ s.metrics.get("n_pairs") }} pairs, {{ s.metrics.get("n_skipped") }} skipped whole.
    Skipped parts: {{ s.skipped_text }}. Adjusted images: {{ s.adjusted_text }}.</p>
  {% else %}
  <p class="note">No evaluation of the main run found for this scenario.</p>
  {% endif %}

  {% for table in s.ablation_tables %}
  <h3>Ablation — {{ table.title }}</h3>
  <table>
    <tr><th class="label">variant</th><th>n</th>{% for h in ablation_headers %}<th>{{ h }}</th>{% endfor %}<th>history LPIPS vs none</th></tr>
    {% for row in table.rows %}
    <tr class="{{ 'skipped' if row.skipped else '' }}"><td class="label">{{ row.label }}{% if row.skipped %} <span class="muted">(skipped: {{ row.skipped }})</span>{% endif %}</td>
      <td>{{ row.n }}</td>{% for key in ablation_keys %}<td>{{ row[key] }}</td>{% endfor %}<td>{{ row.change }}</td></tr>
    {% endfor %}
  </table>
  {% endfor %}
  {% if not s.ablation_tables %}<p class="note">No ablation results for this scenario.</p>{% endif %}

  {% if s.statistics %}
  <h3>Personalisation and paired differences</h3>
  {% if s.statistics.not_computed %}
  {% for reason in s.statistics.not_computed %}<p class="note">Not computed: {{ reason }}</p>{% endfor %}
  {% else %}
  <table class="statistics">
    <tr>{% for h in s.statistics.headers %}<th{% if loop.first %} class="label"{% endif %}>{{ h }}</th>{% endfor %}</tr>
    {% for row in s.statistics.rows %}
    <tr>{% for cell in row %}<td{% if loop.first %} class="label"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
    {% endfor %}
  </table>
  <p class="note">{{ s.statistics_note }}</p>
  {% endif %}
  {% endif %}

  {% if s.ground_truth %}
  <h3>Latent preference recovered (default world; measured without CLIP)</h3>
  <table>
    <tr><th class="label">source / variant</th>{% for c in s.ground_truth_checks %}<th>{{ c }}</th>{% endfor %}</tr>
    {% for name, entry in s.ground_truth %}
    <tr><td class="label">{{ name }}</td>{% for c in s.ground_truth_checks %}<td>{{ fmt_rate(entry.get(c), entry.get("n_" ~ c)) }}</td>{% endfor %}</tr>
    {% endfor %}
  </table>
  <p class="note">{{ s.ground_truth_note }}</p>
  {% endif %}

  <h3>Weight case study: d_p, d_t and z across w_p : w_t</h3>
  {{ s.weights_svg }}

  <h3>Gallery</h3>
  {% if not s.gallery %}<p class="note">No generated pairs to show.</p>{% endif %}
  {% for pair in s.gallery %}
  <div class="gallery-pair">
    <div class="pair-title">user {{ pair.user_id }} → target {{ pair.target_item }}{% if pair.target_title %} ({{ pair.target_title }}){% endif %}</div>
    <div class="keywords"><b>preference keywords k_p:</b> {{ pair.preference_keywords or "—" }}</div>
    <div class="keywords"><b>target keywords k_t:</b> {{ pair.target_keywords or "—" }}</div>
    {% if pair.metrics %}<div class="keywords"><b>chosen output:</b> {{ pair.metrics }}</div>{% endif %}
    <div class="strip">
      <div class="group"><div class="group-title">history</div><div class="strip">
        {% for im in pair.history %}{{ figure(im) }}{% endfor %}
      </div></div>
      <div class="group"><div class="group-title">target</div><div class="strip">{{ figure(pair.target) }}</div></div>
      <div class="group"><div class="group-title">candidates (ring = chosen by z)</div><div class="strip">
        {% for im in pair.candidates %}{{ figure(im) }}{% endfor %}
      </div></div>
      {% if pair.ablations %}
      <div class="group"><div class="group-title">ablation outputs (same pair and seeds)</div><div class="strip">
        {% for im in pair.ablations %}{{ figure(im) }}{% endfor %}
      </div></div>
      {% endif %}
    </div>
  </div>
  {% endfor %}
</section>
{% endfor %}
</main>
</body>
</html>
"""

FIGURE_MACRO = r"""{% macro figure(im) -%}
<figure class="{{ 'chosen' if im.chosen else '' }}">
{%- if im.src -%}<img src="{{ im.src }}" width="{{ size }}" height="{{ size }}" alt="{{ im.alt }}">
{%- else -%}<div class="missing" style="width:{{ size }}px;height:{{ size }}px">missing</div>{%- endif -%}
<figcaption>{% for line in im.caption %}{{ line }}{% if not loop.last %}<br>{% endif %}{% endfor %}</figcaption>
</figure>
{%- endmacro %}"""
