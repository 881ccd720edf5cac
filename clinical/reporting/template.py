"""The model report's page: one Jinja2 template, styles inline, so the HTML is one self-contained file."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Model report — {{ model }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5rem; } figure img { max-width: 27rem; }
code { font-size: .85rem; } .none { color: #a33; }
@media print { h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
</style>
</head>
<body>
<h1>Model report — <code>{{ model }}</code></h1>
<p>{{ classes | join(" / ") }} · metrics at {{ level }} level (items combined by their {{ aggregate }}) ·
made by the registered version's runs</p>

<section id="intended-use"><h2>Intended use</h2>
<p>{{ intended_use }}</p></section>

<section id="data-flow"><h2>Data: patient flow</h2>
<table><tr><th>stage</th><th>count</th></tr>
{% for row in flow %}<tr><td>{{ row.stage }}</td><td class="num">{{ row.count }}</td></tr>
{% endfor %}</table></section>

<section id="cohort"><h2>Data: cohort by site and label</h2>
<p>Patients (items) per site and label; modalities: {{ modalities }}.</p>
{{ cohort_table | safe }}</section>

<section id="deidentification"><h2>Data: de-identification (DICOM PS3.15 Annex E)</h2>
<table><tr><th>code</th><th>profile or option</th><th>applied</th><th>how</th></tr>
{% for row in deidentification %}<tr><td>{{ row.code }}</td><td>{{ row.option }}</td><td>{{ row.applied }}</td>
<td>{{ row.how }}</td></tr>
{% endfor %}</table></section>

<section id="split"><h2>Data: split and leakage audit</h2>
<p>{{ split_text }}</p>
<p>Patients per role and outer fold:</p>
{{ roles_table | safe }}
<p>Leakage audit (keys found in two roles of one fold): {{ leakage }}.</p></section>

<section id="model"><h2>Model</h2>
<table>{% for key, value in recipe %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table></section>

<section id="compute"><h2>Compute</h2>
<table>{% for key, value in compute %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table></section>

<section id="performance"><h2>Performance</h2>
<h3 id="cv">Cross-validation: mean ± SD over {{ n_folds }} folds</h3>
{{ cv_table | safe }}
<h3 id="pooled">Pooled out-of-fold predictions, 95% CIs resampling patients</h3>
{{ pooled_table | safe }}
<h3 id="curves">ROC and precision–recall</h3>
{% for name in ["roc", "pr"] if name in figures %}<figure><img alt="{{ name }}" src="{{ figures[name] }}">
<figcaption>{{ name | upper }} of the pooled out-of-fold predictions</figcaption></figure>
{% endfor %}
<h3 id="calibration">Calibration</h3>
<p>{{ calibration_text }}</p>
{% if "calibration" in figures %}<figure><img alt="calibration" src="{{ figures["calibration"] }}">
<figcaption>Reliability diagram</figcaption></figure>{% endif %}
</section>

<section id="sites"><h2>Performance per site</h2>
{% if "sites" in figures %}<figure><img alt="sites" src="{{ figures["sites"] }}">
<figcaption>AUROC per site with patient-bootstrap CIs; pooled as a diamond</figcaption></figure>
{% else %}<p>One site only: no per-site comparison.</p>{% endif %}</section>

<section id="limitations"><h2>Limitations</h2>
<ul>{% for line in limitations %}<li>{{ line }}</li>{% endfor %}</ul></section>

<section id="digests"><h2>Digests</h2>
<table>{% for key, value in digests %}<tr><th>{{ key }}</th><td><code>{{ value }}</code></td></tr>
{% endfor %}</table></section>

<section id="guidelines"><h2>TRIPOD+AI and CLAIM 2024: where this report answers each item</h2>
<table><tr><th>guideline</th><th>item</th><th>topic</th><th>answered in</th><th>note</th></tr>
{% for row in guidelines %}<tr><td>{{ row.guideline }}</td><td>{{ row.item }}</td><td>{{ row.topic }}</td>
<td>{% if row.section %}<a href="#{{ row.section }}">{{ row.section }}</a>{% else %}<span class="none">cannot
</span>{% endif %}</td><td>{{ row.note }}</td></tr>
{% endfor %}</table></section>
</body>
</html>
"""
