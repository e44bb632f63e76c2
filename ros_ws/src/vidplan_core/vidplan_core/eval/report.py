"""One self-contained HTML report of an eval-bag run (jinja2): the plots embedded as base64 PNG (each also linked
to its file under ``plots/``), the main numbers as tables, the input's warnings and every null metric's reason."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

__all__ = ["render_report", "write_report"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>vidplan eval-bag: {{ m.bag | e }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
 h1 { font-size: 1.4em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
 table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
 td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; } th { background: #f4f4f4; }
 td.l, th.l { text-align: left; }
 .warn { background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }
 .partial { background: #fde8e8; border-left: 4px solid #d00; padding: 0.5em 1em; }
 figure { display: inline-block; margin: 0.5em; vertical-align: top; } figcaption { font-size: 0.8em; color: #555; }
 img { max-width: 100%; }
 code { background: #f4f4f4; padding: 0 3px; }
</style></head><body>
<h1>vidplan eval-bag</h1>
<table>
 <tr><th class="l">bag</th><td class="l"><code>{{ m.bag | e }}</code></td></tr>
 <tr><th class="l">model</th><td class="l"><code>{{ m.model | e }}</code></td></tr>
 <tr><th class="l">status</th><td class="l">{{ m.status }}</td></tr>
 <tr><th class="l">created (UTC)</th><td class="l">{{ m.created_utc }}</td></tr>
 <tr><th class="l">instruction</th><td class="l">{{ m.input.instruction | e }}</td></tr>
 <tr><th class="l">success label</th><td class="l">{{ fmt(m.input.success) }} ({{ m.input.label_source or "none" }})</td></tr>
 <tr><th class="l">frames / windows</th><td class="l">{{ m.input.frames }} frames at {{ m.input.fps }} Hz
   ({{ "%.2f" | format(m.input.duration_s) }} s), {{ m.windows }} evaluated windows
   ({{ m.settings.history }} history + {{ m.settings.horizon }} future frames)</td></tr>
 <tr><th class="l">settings</th><td class="l">K = {{ m.settings.flow_steps }} flow-map steps, device
   {{ m.settings.device }}, seed {{ m.settings.seed }}, γ = {{ m.settings.gamma }}</td></tr>
 <tr><th class="l">images</th><td class="l">recorded {{ m.input.source_image_size | join("×") }}, model views
   {{ m.input.model_view_size | join("×") }} (H×W)</td></tr>
</table>
{% if m.input.salvaged %}<p class="partial"><b>Partial evaluation.</b> The bag is truncated or corrupt; only the
messages before the damage were evaluated (see the warnings). The command exits with code 3.</p>{% endif %}
{% if m.warnings %}<div class="warn"><b>Warnings</b><ul>{% for w in m.warnings %}<li>{{ w | e }}</li>{% endfor %}
</ul></div>{% endif %}

<h2>Prediction quality (flow map on the recorded actions vs the recorded future)</h2>
<table><tr><th class="l">metric</th>{% for h in steps %}<th>step {{ h }}</th>{% endfor %}</tr>
{% for v in views %}<tr><td class="l">PSNR {{ v }} [dB]</td>{% for x in m.prediction.psnr_db[v] %}<td>{{ fmt(x, 2) }}</td>{% endfor %}</tr>
{% endfor %}{% for v in views %}<tr><td class="l">SSIM {{ v }}</td>{% for x in m.prediction.ssim[v] %}<td>{{ fmt(x, 3) }}</td>{% endfor %}</tr>
{% endfor %}<tr><td class="l">latent MSE</td>{% for x in m.prediction.latent_mse.per_step %}<td>{{ fmt(x, 4) }}</td>{% endfor %}</tr>
</table>
<p>Mean PSNR {{ fmt(m.prediction.psnr_db_mean, 2) }} dB, mean SSIM {{ fmt(m.prediction.ssim_mean, 3) }}, latent MSE
{{ fmt(m.prediction.latent_mse.mean, 4) }}. Autoencoder reconstruction PSNR (ceiling):
{% for v in cams %}{{ v }} {{ fmt(m.prediction.reconstruction_psnr_db[v], 2) }} dB{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{{ fig("psnr_per_step", "PSNR per horizon step and view (dashed: autoencoder reconstruction)") }}
{{ fig("ssim_per_step", "SSIM per horizon step and view") }}
{{ fig("latent_mse_per_step", "latent MSE per horizon step") }}
{% for name in example_names %}{{ fig(name, "rows: recorded future, predicted future, UQ entropy over the prediction (blue low → red high); views stacked left/right/wrist") }}{% endfor %}

<h2>Uncertainty head</h2>
{% if m.uq %}
<table>
 <tr><th class="l">ECE (15 bins, {{ m.uq.num_bins }}-bin |error| ∈ [0, {{ m.uq.max_error }}])</th><td>{{ fmt(m.uq.ece, 4) }}</td></tr>
 <tr><th class="l">bin accuracy</th><td>{{ fmt(m.uq.bin_accuracy, 3) }}</td></tr>
 <tr><th class="l">latent elements</th><td>{{ m.uq.elements }}</td></tr>
 <tr><th class="l">mean normalised entropy</th><td>{{ fmt(m.uq.mean_normalized_entropy, 3) }}</td></tr>
 <tr><th class="l">mean |latent error| / MAE of the expected error</th><td>{{ fmt(m.uq.mean_abs_error, 4) }} / {{ fmt(m.uq.expected_error_mae, 4) }}</td></tr>
 {% for level in ["per_element", "per_frame"] %}{% set c = m.uq.entropy_error_correlation[level] %}
 <tr><th class="l">entropy–error correlation, {{ level.replace("_", " ") }}</th><td>{% if c %}Pearson {{ fmt(c.pearson_r, 3) }}
   (p = {{ "%.2g" | format(c.pearson_p) }}), Spearman {{ fmt(c.spearman_r, 3) }} (p = {{ "%.2g" | format(c.spearman_p) }}), n = {{ c.n }}
   {% else %}null: {{ reason("uq.entropy_error_correlation." ~ level) | e }}{% endif %}</td></tr>{% endfor %}
</table>
{{ fig("uq_reliability", "UQ head reliability diagram") }}
{{ fig("uq_entropy_vs_error", "per predicted frame: mean entropy vs mean |latent error|") }}
{% else %}<p>null: {{ reason("uq") | e }}</p>{% endif %}

<h2>Reward head vs the Monte-Carlo value</h2>
{% if m.reward %}
<table><tr><th class="l">latents</th><th>bin accuracy</th><th>ECE</th><th>value MAE</th><th>frames</th></tr>
{% for kind in ["on_predicted", "on_recorded"] %}{% set r = m.reward[kind] %}<tr><td class="l">{{ kind.replace("_", " ") }}</td>
 <td>{{ fmt(r.bin_accuracy, 3) }}</td><td>{{ fmt(r.ece, 4) }}</td><td>{{ fmt(r.value_mae, 4) }}</td><td>{{ r.frames }}</td></tr>{% endfor %}
</table>
<p>γ = {{ m.reward.gamma }}, success = {{ m.reward.success }}, {{ m.reward.num_bins }} value bins.</p>
{{ fig("reward_value", "reward head expected value (dots) vs the Monte-Carlo value (line)") }}
{{ fig("reward_reliability", "reward head reliability diagram (predicted latents)") }}
{% else %}<p>null: {{ reason("reward") | e }}</p>{% endif %}

<h2>Planner in shadow mode (its chunk vs the recorded one)</h2>
{% if m.shadow %}
<table><tr><th class="l">error</th>{% for h in range(1, (m.shadow.position_m_per_step | length) + 1) %}<th>step {{ h }}</th>{% endfor %}<th>mean</th></tr>
{% for key, label in [("position_m", "position [m]"), ("rotation_rad", "rotation [rad]"), ("gripper", "gripper")] %}
<tr><td class="l">{{ label }}</td>{% for x in m.shadow[key ~ "_per_step"] %}<td>{{ fmt(x, 4) }}</td>{% endfor %}<td>{{ fmt(m.shadow[key ~ "_mean"], 4) }}</td></tr>{% endfor %}
</table>
<p>{{ m.shadow.plans }} plans; status: {% for k, v in m.shadow.status.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}.</p>
{{ fig("shadow_errors", "shadow planner vs recorded chunk, per step") }}
{% else %}<p>null: {{ reason("shadow") | e }}</p>{% endif %}

<h2>Controllability (does the model use its actions?)</h2>
{% set c = m.controllability %}
{% if c and c.error %}
<p>The same {{ c.windows }} windows predicted with the same initial noise per window, with the recorded actions
(true), with another window's chunk (shuffled: {{ c.shuffle | e }}) and with mirrored actions ({{ c.mirror | e }}).
Ratio = latent MSE with the variant / with the true actions: ≈ 1.0 means the model ignores its actions, &gt; 1 that
wrong actions make its prediction worse.</p>
<table><tr><th class="l">metric</th>{% for h in steps %}<th>step {{ h }}</th>{% endfor %}<th>mean</th></tr>
{% for v in ["true", "shuffled", "mirrored"] %}{% set e = c.error[v] %}
{% if e %}<tr><td class="l">latent MSE, {{ v }}</td>{% for x in e.latent_mse.per_step %}<td>{{ fmt(x, 4) }}</td>{% endfor %}<td>{{ fmt(e.latent_mse.mean, 4) }}</td></tr>
{% if e.psnr_db %}<tr><td class="l">PSNR [dB], {{ v }}</td>{% for x in e.psnr_db.per_step %}<td>{{ fmt(x, 2) }}</td>{% endfor %}<td>{{ fmt(e.psnr_db.mean, 2) }}</td></tr>{% endif %}
{% else %}<tr><td class="l">{{ v }}</td><td class="l" colspan="{{ steps | length + 1 }}">null: {{ reason("controllability.error." ~ v) | e }}</td></tr>{% endif %}
{% endfor %}
{% for v in ["shuffled", "mirrored"] %}{% set r = c.ratio[v] %}
{% if r %}<tr><th class="l">ratio {{ v }} / true</th>{% for x in r.per_step %}<td><b>{{ fmt(x, 3) }}</b></td>{% endfor %}<td><b>{{ fmt(r.mean, 3) }}</b></td></tr>
{% else %}<tr><th class="l">ratio {{ v }} / true</th><td class="l" colspan="{{ steps | length + 1 }}">null: {{ reason("controllability.ratio." ~ v) | e }}</td></tr>{% endif %}
{% endfor %}
</table>
{% set d = c.latent_difference %}
<p>Action effect vs noise effect on the predicted latents (L2 norm over a window, mean over windows):
‖pred(true) − pred(mirrored)‖ = {{ fmt(d.action_mirrored.window, 3) }}{% if d.action_shuffled %},
‖pred(true) − pred(shuffled)‖ = {{ fmt(d.action_shuffled.window, 3) }}{% endif %}, ‖pred(true) − pred(true, other noise)‖
= {{ fmt(d.noise.window, 3) }}; ratio (mirrored) {{ fmt(d.action_vs_noise.mirrored, 3) }}{% if d.action_vs_noise.shuffled is not none %},
(shuffled) {{ fmt(d.action_vs_noise.shuffled, 3) }}{% endif %}.</p>
{{ fig("controllability", "latent MSE ratio of wrong vs true actions per horizon step (1.0 = action-blind)") }}
{% else %}<p>null: {{ reason("controllability") | e }}</p>{% endif %}

<h2>Latency per stage</h2>
<table><tr><th class="l">stage</th><th>count</th><th>mean [ms]</th><th>p50 [ms]</th><th>p95 [ms]</th><th>max [ms]</th></tr>
{% for k, v in m.latency.items() if v is mapping and v.count %}<tr><td class="l">{{ k }}</td><td>{{ v.count }}</td><td>{{ fmt(v.mean_ms, 2) }}</td>
<td>{{ fmt(v.p50_ms, 2) }}</td><td>{{ fmt(v.p95_ms, 2) }}</td><td>{{ fmt(v.max_ms, 2) }}</td></tr>{% endfor %}
</table>
<p>Model loading took {{ fmt(m.latency.model_load_s, 2) }} s. <code>encode_frame</code> is per camera triplet (each frame is
encoded once and cached, as in the planner).</p>
{{ fig("latency", "latency per stage (log scale)") }}

{% if m.null_reasons %}<h2>Null metrics and why</h2>
<table><tr><th class="l">metric</th><th class="l">reason</th></tr>
{% for k, v in m.null_reasons.items() %}<tr><td class="l"><code>{{ k | e }}</code></td><td class="l">{{ v | e }}</td></tr>{% endfor %}
</table>{% endif %}
<p style="font-size:0.8em;color:#777">All numbers are in <code>metrics.json</code> next to this file; plots are in
<code>plots/</code>.</p>
</body></html>
"""  # noqa: E501 - HTML table rows read better unbroken


def render_report(metrics: dict[str, Any], plots: dict[str, Path], base_dir: Path) -> str:
    """HTML text of the report; ``plots`` name → PNG path (embedded, and linked relative to ``base_dir``)."""
    from jinja2 import Environment
    from markupsafe import Markup

    env = Environment(autoescape=False, trim_blocks=False)

    def fmt(x: Any, nd: int = 3) -> str:
        if x is None:
            return "null"
        if isinstance(x, bool):
            return str(x).lower()
        if isinstance(x, int):
            return str(x)
        return f"{x:.{nd}f}"

    def fig(name: str, caption: str) -> Markup:
        p = plots.get(name)
        if p is None:
            return Markup("")
        data = base64.b64encode(Path(p).read_bytes()).decode()
        try:
            rel = Path(p).resolve().relative_to(base_dir.resolve()).as_posix()
        except ValueError:
            rel = Path(p).as_posix()
        cap = html.escape(caption)
        return Markup(f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" '
                      f'src="data:image/png;base64,{data}"><figcaption>{cap} '
                      f'(<a href="{html.escape(rel)}">{html.escape(rel)}</a>)</figcaption></figure>')

    def reason(path: str) -> str:
        return metrics.get("null_reasons", {}).get(path, "")

    steps = list(range(1, len(metrics["prediction"]["psnr_db"]["mean"]) + 1))
    return env.from_string(_TEMPLATE).render(
        m=metrics, fmt=fmt, fig=fig, reason=reason, steps=steps, views=["left", "right", "wrist", "mean"],
        cams=["left", "right", "wrist"],
        example_names=sorted(k for k in plots if k.startswith("example_")))


def write_report(metrics: dict[str, Any], plots: dict[str, Path], path: str | Path) -> Path:
    """Write ``report.html`` (self-contained) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(metrics, plots, path.parent), encoding="utf-8")
    return path
